"""The tick processor: pure code from one upstream frame to the Redis writes it causes. No I/O.

Each instrument's feed is rendered once per mode that has demand (projected from the mode it
arrived in), stamped with a per-instrument-per-mode sequence number and the current epoch, and
turned into ticks for the publisher. The newest whole value of every (mode, key) stays in memory
so that it can be published again after a Redis outage.

Partial ticks: a live feed may leave out parts that did not change (Upstox's `marketFF` without
`marketLevel`). Such a value is published on the tick channel as it came (rendered per mode, its
metadata marked partial), while the last value (the snapshot) is the whole one: the previous
whole value with each part the tick carries replaced (`shared.render.merge_value`). Whether a
feed lacks a part is known from its fields (`present_parts`) against the parts the key's feeds
have carried, so a whole feed costs no more than before; only a partial one costs a merge.
`initial_feed` frames are whole by definition. A mode newly projected from a key that already
streams (no snapshot comes for it) starts from a whole value, completed from the whole value of
the mode the feeds arrive in.

Where a replica asks for a (mode, key) on Upstox's wire (`set_render`'s `entries`), the same
value also goes out as Upstox's protobuf (`FrameResult.entries`): one serialized `feeds` map
entry on its own channel and last value, which the gateway splices into Upstox-protocol frames.
Nothing is produced for a wire nobody asked for: entries cost the ingestor only where they are
used. A feed in the mode it arrived in is serialized as it came (partial or whole, as Upstox
sends it); a projected mode is projected as protobuf (`project_feed`), never through its JSON; a
partial entry's last value is merged on protobuf feeds (`merge_feed`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from google.protobuf import json_format

from shared import redis_contract as rc
from shared.feed_frames import entry_bytes
from shared.instruments import Mode
from shared.proto import pb
from shared.render import (
    BRANCH_BITS,
    LTPC_BIT,
    ProjectionError,
    decode_frame,
    feed_mode,
    merge_feed,
    merge_value,
    present_parts,
    project,
    project_feed,
    render_frame_envelope,
)

__all__ = ["PART_FEEDS", "FrameResult", "Tick", "TickProcessor", "new_epoch"]

Tick = tuple[bytes, bytes, bytes, bytes]
"""(channel, last-value key, payload, last value): the last value is b"" when it is the payload
itself (a whole value), else the whole value merged from a partial payload."""

_MARKET_INFO = pb.Type.Value("market_info")
_INITIAL_FEED = pb.Type.Value("initial_feed")

PART_FEEDS = 250
"""A frame with more instruments than this is rendered and published in parts of this size."""


def new_epoch() -> str:
    return secrets.token_hex(6)


class _Route:
    """Where one (key, mode) goes on each wire, with its sequence counter and newest values."""

    __slots__ = (
        "channel",
        "entry",
        "entry_channel",
        "key",
        "last_entry_key",
        "last_key",
        "latest",
        "latest_feed",
        "ltpc_only",
        "mode",
        "seq",
        "tick",
    )

    def __init__(self, key: str, mode: Mode) -> None:
        self.key = key
        self.mode = mode
        self.ltpc_only = mode is Mode.LTPC
        self.tick = False  # JSON ticks wanted
        self.entry = False  # protobuf entries wanted
        self.channel = rc.tick_channel(mode, key).encode()
        self.last_key = rc.last_value_key(mode, key).encode()
        self.entry_channel = rc.entry_channel(mode, key).encode()
        self.last_entry_key = rc.last_entry_key(mode, key).encode()
        self.seq = 0
        self.latest: bytes | None = None  # the newest whole payload
        self.latest_feed: bytes | None = None  # the newest whole `Feed`, serialized

    def want(self, tick: bool, entry: bool) -> None:
        """Set the wires; a wire taken up again starts from a whole value (what it held when
        it was dropped is stale: the feeds in between were not merged into it)."""
        if tick and not self.tick:
            self.latest = None
        if entry and not self.entry:
            self.latest_feed = None
        self.tick, self.entry = tick, entry

    def last_entry(self) -> bytes | None:
        return None if self.latest_feed is None else entry_bytes(self.key, self.latest_feed)


def _source_whole(feed: pb.Feed, routes: tuple[_Route, ...]) -> pb.Feed | None:
    """The newest whole value, on either wire, of the mode `feed` arrived in (None if that mode
    has no route or no value yet)."""
    source = feed_mode(feed)
    for route in routes:
        if route.mode is source:
            if route.entry and route.latest_feed is not None:
                return pb.Feed.FromString(route.latest_feed)
            if route.tick and route.latest is not None:
                return json_format.Parse(rc.split_tick(route.latest)[0], pb.Feed())
    return None


@dataclass(slots=True)
class FrameResult:
    ticks: list[Tick] = field(default_factory=list)
    entries: list[Tick] = field(default_factory=list)  # the same values as `feeds` entries
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
        self._parts: dict[str, int] = {}  # key -> parts its feeds have carried (present_parts)
        self.market_info: bytes | None = None

    def new_epoch(self) -> str:
        """Continuity is lost (a new upstream connection): new epoch, sequences start again."""
        self.epoch = new_epoch()
        for route in self._routes.values():
            route.seq = 0
        return self.epoch

    def set_render(
        self,
        ticks: Mapping[str, frozenset[Mode]],
        entries: Mapping[str, frozenset[Mode]] | None = None,
    ) -> None:
        """Which modes to publish per key: as JSON ticks, and as protobuf `feeds` entries.
        Counters survive demand changes within an epoch."""
        entries = entries or {}
        active: dict[str, tuple[_Route, ...]] = {}
        for route in self._active_routes():
            if route.key not in ticks and route.key not in entries:
                route.want(False, False)
        for key in ticks.keys() | entries.keys():
            tick_modes, entry_modes = ticks.get(key, frozenset()), entries.get(key, frozenset())
            routes: list[_Route] = []
            for mode in sorted(tick_modes | entry_modes, key=lambda m: m.richness):
                route = self._routes.get((key, mode)) or _Route(key, mode)
                self._routes[(key, mode)] = route
                route.want(mode in tick_modes, mode in entry_modes)
                routes.append(route)
            for route in self._active.get(key, ()):
                if route not in routes:
                    route.want(False, False)
            active[key] = tuple(routes)
        self._active = active

    def _active_routes(self) -> Iterator[_Route]:
        for routes in self._active.values():
            yield from routes

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
        whole = frame.type == _INITIAL_FEED
        if part_size <= 0 or count <= part_size:
            yield self._render(feeds.items(), FrameResult(feeds=count, ts=ts), whole)
            return
        items = list(feeds.items())
        for start in range(0, count, part_size):
            result = FrameResult(feeds=count if start == 0 else 0, ts=ts)
            result.more = start + part_size < count
            yield self._render(items[start : start + part_size], result, whole)

    def _render(
        self, items: Iterable[tuple[str, pb.Feed]], result: FrameResult, whole: bool
    ) -> FrameResult:
        ticks = result.ticks
        active = self._active
        known_parts = self._parts
        ts = result.ts
        epoch = self.epoch
        for key, feed in items:
            routes = active.get(key)
            if routes is None:
                continue  # in flight while being unsubscribed, or never asked for
            present = present_parts(feed)
            known = known_parts.get(key)
            missing = 0
            if whole or known is None or (known ^ present) & BRANCH_BITS:
                known_parts[key] = present  # a whole feed, or a first / other-branch one
            else:
                missing = known & ~present
                if present & ~known:
                    known_parts[key] = known | present
            for route in routes:
                if missing & LTPC_BIT and route.ltpc_only:
                    continue  # nothing new in ltpc mode: Upstox would send that mode nothing
                if route.tick:
                    self._add_tick(ticks, route, feed, missing, routes, epoch, ts)
                if route.entry:
                    self._add_entry(result.entries, route, feed, missing, routes)
        return result

    def _add_tick(
        self,
        ticks: list[Tick],
        route: _Route,
        feed: pb.Feed,
        missing: int,
        routes: tuple[_Route, ...],
        epoch: str,
        ts: int,
    ) -> None:
        try:
            value = project(feed, route.mode)
        except ProjectionError:
            # Not in this feed (yet): an ltpc feed just after an upgrade to full, or a feed
            # with no data branch. Rare, so cheaper than checking every feed first.
            return
        route.seq += 1
        merged = None
        if missing and route.latest is not None:
            merged = merge_value(rc.split_tick(route.latest)[0], value)
        elif missing:  # a route new to a key already streaming: its first value whole
            value = self._first_whole(route, feed, routes) or value
        if merged is None:
            payload = rc.encode_tick(value, route.seq, epoch, ts)
            route.latest = payload
            ticks.append((route.channel, route.last_key, payload, b""))
        else:
            payload = rc.encode_tick(value, route.seq, epoch, ts, partial=True)
            route.latest = rc.encode_tick(merged, route.seq, epoch, ts)
            ticks.append((route.channel, route.last_key, payload, route.latest))

    @staticmethod
    def _add_entry(
        entries: list[Tick],
        route: _Route,
        feed: pb.Feed,
        missing: int,
        routes: tuple[_Route, ...],
    ) -> None:
        """`route`'s value as a `feeds` entry (and, for a partial one, its merged whole)."""
        try:
            value = project_feed(feed, route.mode)
        except ProjectionError:
            return  # as for ticks
        feed_bytes = value.SerializeToString()
        if missing and route.latest_feed is not None:
            whole = merge_feed(pb.Feed.FromString(route.latest_feed), value)
            route.latest_feed = whole.SerializeToString()
            last = entry_bytes(route.key, route.latest_feed)
            partial = rc.PARTIAL_ENTRY + entry_bytes(route.key, feed_bytes)
            entries.append((route.entry_channel, route.last_entry_key, partial, last))
            return
        if missing:  # a route new to a key already streaming: its first value whole
            source = _source_whole(feed, routes)
            if source is not None:
                feed_bytes = project_feed(merge_feed(source, feed), route.mode).SerializeToString()
        route.latest_feed = feed_bytes
        entry = entry_bytes(route.key, feed_bytes)
        entries.append((route.entry_channel, route.last_entry_key, entry, b""))

    @staticmethod
    def _first_whole(route: _Route, feed: pb.Feed, routes: tuple[_Route, ...]) -> bytes | None:
        """`route`'s value of the partial `feed`, made whole from the whole value of the mode the
        feed arrived in (once per route: upstream sends no snapshot for a mode that is only
        projected, so Upstox's own first value in that mode would be whole)."""
        whole = _source_whole(feed, routes)
        return None if whole is None else project(merge_feed(whole, feed), route.mode)

    def latest(self) -> list[Tick]:
        """The newest whole payload of every (key, mode) that has demand, to publish again."""
        ticks: list[Tick] = []
        for route in self._active_routes():
            if route.tick and route.latest is not None:
                ticks.append((route.channel, route.last_key, route.latest, b""))
            entry = route.last_entry() if route.entry else None
            if entry is not None:
                ticks.append((route.entry_channel, route.last_entry_key, entry, b""))
        return ticks

    def forget(self) -> None:
        """Drop every stored payload and counter (the instance became a standby)."""
        self._routes.clear()
        self._active = {}
        self._parts.clear()
        self.market_info = None
