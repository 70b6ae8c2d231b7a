"""The tick processor: pure code from one upstream frame to the Redis writes it causes. No I/O.

Each instrument's feed is rendered once per mode that has demand (projected from the mode it
arrived in), stamped with a per-instrument-per-mode sequence number and the current epoch, and
turned into (channel, last-value key, payload) triples for the publisher. The newest payload of
every (mode, key) stays in memory so that it can be published again after a Redis outage.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from shared import redis_contract as rc
from shared.instruments import Mode
from shared.proto import pb
from shared.render import ProjectionError, decode_frame, project, render_frame_envelope

__all__ = ["PART_FEEDS", "FrameResult", "Tick", "TickProcessor", "new_epoch"]

Tick = tuple[bytes, bytes, bytes]
"""(channel, last-value key, payload)."""

_MARKET_INFO = pb.Type.Value("market_info")

PART_FEEDS = 250
"""A frame with more instruments than this is rendered and published in parts of this size."""


def new_epoch() -> str:
    return secrets.token_hex(6)


class _Route:
    """Where one (key, mode) goes, with its sequence counter and newest payload."""

    __slots__ = ("channel", "last_key", "latest", "mode", "seq")

    def __init__(self, key: str, mode: Mode) -> None:
        self.mode = mode
        self.channel = rc.tick_channel(mode, key).encode()
        self.last_key = rc.last_value_key(mode, key).encode()
        self.seq = 0
        self.latest: bytes | None = None


@dataclass(slots=True)
class FrameResult:
    ticks: list[Tick] = field(default_factory=list)
    market_info: bytes | None = None  # the market_info frame as JSON, for MARKET_INFO
    feeds: int = 0  # instruments in the frame, published or not
    ts: int = 0  # the frame's currentTs (ms since epoch), 0 when absent
    received: float = 0.0  # time.monotonic() when the frame arrived (set by the reader)
    more: bool = False  # further parts of the same frame follow (`process_parts`)


class TickProcessor:
    """Frames in, ticks out. Call `set_render` when demand changes, `new_epoch` on reconnect."""

    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or new_epoch()
        self._routes: dict[tuple[str, Mode], _Route] = {}  # every route seen in this epoch
        self._active: dict[str, tuple[_Route, ...]] = {}  # key -> routes with demand
        self.market_info: bytes | None = None

    def new_epoch(self) -> str:
        """Continuity is lost (a new upstream connection): new epoch, sequences start again."""
        self.epoch = new_epoch()
        for route in self._routes.values():
            route.seq = 0
        return self.epoch

    def set_render(self, render: Mapping[str, frozenset[Mode]]) -> None:
        """Which modes to publish per key. Counters survive demand changes within an epoch."""
        active: dict[str, tuple[_Route, ...]] = {}
        for key, modes in render.items():
            routes = []
            for mode in sorted(modes, key=lambda m: m.richness):
                route = self._routes.get((key, mode))
                if route is None:
                    route = self._routes[(key, mode)] = _Route(key, mode)
                routes.append(route)
            active[key] = tuple(routes)
        self._active = active

    def process(self, data: bytes) -> FrameResult:
        """Decode and render one frame; raises `RenderError` if the bytes are not a frame."""
        return next(self.process_parts(data))

    def process_parts(self, data: bytes, part_size: int = 0) -> Iterator[FrameResult]:
        """The frame's results in parts of at most `part_size` instruments (0: one part), so
        that a large frame (an initial snapshot of thousands of keys) can be published part by
        part while the rest is still being rendered. Every part has `more` set but the last;
        the first carries the frame's `feeds` count. Raises `RenderError` (at the first part)
        if the bytes are not a frame."""
        frame = decode_frame(data)
        ts = frame.currentTs
        if frame.type == _MARKET_INFO:
            self.market_info = render_frame_envelope(frame)
            yield FrameResult(market_info=self.market_info, ts=ts)
            return
        feeds = frame.feeds
        count = len(feeds)
        if part_size <= 0 or count <= part_size:
            yield self._render(feeds.items(), FrameResult(feeds=count, ts=ts))
            return
        items = list(feeds.items())
        for start in range(0, count, part_size):
            result = FrameResult(feeds=count if start == 0 else 0, ts=ts)
            result.more = start + part_size < count
            yield self._render(items[start : start + part_size], result)

    def _render(self, items: Iterable[tuple[str, pb.Feed]], result: FrameResult) -> FrameResult:
        ticks = result.ticks
        active = self._active
        ts = result.ts
        epoch = self.epoch
        encode_tick = rc.encode_tick
        for key, feed in items:
            routes = active.get(key)
            if routes is None:
                continue  # in flight while being unsubscribed, or never asked for
            for route in routes:
                try:
                    value = project(feed, route.mode)
                except ProjectionError:
                    # Not in this feed (yet): an ltpc feed just after an upgrade to full, or a
                    # feed with no data branch. Rare, so cheaper than checking every feed first.
                    continue
                route.seq += 1
                payload = encode_tick(value, route.seq, epoch, ts)
                route.latest = payload
                ticks.append((route.channel, route.last_key, payload))
        return result

    def latest(self) -> list[Tick]:
        """The newest payload of every (key, mode) that has demand, to publish again."""
        return [
            (route.channel, route.last_key, route.latest)
            for routes in self._active.values()
            for route in routes
            if route.latest is not None
        ]

    def forget(self) -> None:
        """Drop every stored payload and counter (the instance became a standby)."""
        self._routes.clear()
        self._active = {}
        self.market_info = None
