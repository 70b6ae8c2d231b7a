"""The live feed's asyncio shell: connections, the tick loop and the faults admin can inject.

One loop ticks every subscribed instrument each `tick_interval_ms`, builds each (key, mode)
update once, and hands every connection one `live_feed` frame holding its keys (a frame is built
once per distinct subscription set). Each connection has a bounded outbox drained by its own
sender task, so a slow reader skips live frames (counted) instead of holding up the others.

Partial ticks (`partial_ticks`, on by default as Upstox does): a live entry leaves out what did
not change since the previous tick of that instrument in that mode (`frames.unchanged_parts`).
The frames stay shared because "the previous tick" is the same for every connection that got it;
a connection that did not (it has just been sent its `initial_feed`, changed the key's mode, or
skipped or was silenced through a live frame) makes those keys' next live entries whole for all.

A stall is silence on data (no `initial_feed`, no `live_feed`; market status changes and pings
go on): either of the connections open when it was asked for, each until its own `silent_until_ms`
(what a stalled Upstox connection looks like: a fresh one gets data), or of the whole feed, new
connections included (an upstream that is down altogether). The hub's clock is the market's: it
may run at an offset from real time (`market_offset_ms`), while tokens keep real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.simulator import frames
from services.simulator.accounts import TokenStore, User
from services.simulator.clock import now_ms
from services.simulator.market import (
    DETAIL_FIRST_LEVEL,
    DETAIL_FULL,
    DETAIL_LTPC,
    MarketModel,
    Snapshot,
)
from services.simulator.universe import Instrument
from shared.feed_protocol import KeyLimits, RequestError, Subscriptions, parse_request
from shared.instruments import Mode

logger = logging.getLogger(__name__)

_DETAIL = {
    Mode.LTPC: DETAIL_LTPC,
    Mode.OPTION_GREEKS: DETAIL_FIRST_LEVEL,
    Mode.FULL: DETAIL_FULL,
    Mode.FULL_D30: DETAIL_FULL,
}
HOUSEKEEPING_MS = 1000
MAX_FEEDS_PER_FRAME = 500  # larger updates go out as several frames, as Upstox batches them


@dataclass(frozen=True)
class CloseRequest:
    code: int
    reason: str


@dataclass(eq=False)
class FeedConnection:
    """One accepted feed WebSocket: who it is, what it wants, what it has been sent."""

    id: int
    user: User
    token: str
    subscriptions: Subscriptions
    max_queued: int
    connected_ms: int
    outbox: deque[bytes | CloseRequest] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    pending_snapshot: list[str] = field(default_factory=list)
    frames_sent: int = 0
    frames_skipped: int = 0
    feeds_offered: int = 0
    requests: int = 0
    bad_requests: int = 0
    closing: bool = False
    silent_until_ms: int = 0  # stalled: no data frames before this (market time)

    def offer_live(self, frame: bytes, feeds: int) -> bool:
        """Queue a live frame; False when it was skipped (the outbox is full)."""
        if self.closing:
            return True
        if len(self.outbox) >= self.max_queued:
            self.frames_skipped += 1
            return False
        self.outbox.append(frame)
        self.feeds_offered += feeds
        self.wakeup.set()
        return True

    def offer_control(self, frame: bytes) -> None:
        if not self.closing:
            self.outbox.append(frame)
            self.wakeup.set()

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.outbox.append(CloseRequest(code, reason))
            self.wakeup.set()

    def stats(self) -> dict[str, object]:
        return {
            "id": self.id,
            "user_id": self.user.user_id,
            "connected_ms": self.connected_ms,
            "subscriptions": {key: str(mode) for key, mode in self.subscriptions.modes.items()},
            "active": len(self.subscriptions.active),
            "refused": {key: str(mode) for key, mode in self.subscriptions.refused().items()},
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "feeds_offered": self.feeds_offered,
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "queued": len(self.outbox),
            "silent_until_ms": self.silent_until_ms,
        }


class ConnectionLimitError(Exception):
    """The user already holds the allowed number of feed connections."""


class FeedHub:
    """All feed connections and the loop that feeds them."""

    def __init__(
        self,
        model: MarketModel,
        tokens: TokenStore,
        limits: KeyLimits,
        tick_interval_ms: float,
        max_connections_per_user: int,
        max_queued_frames: int,
        clock: Callable[[], int] = now_ms,
        market_offset_ms: int = 0,
        partial_ticks: bool = True,
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.limits = limits
        self.tick_interval_ms = tick_interval_ms
        self.max_connections_per_user = max_connections_per_user
        self.max_queued_frames = max_queued_frames
        self._real_now = clock
        self.market_offset_ms = market_offset_ms
        self.connections: dict[int, FeedConnection] = {}
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._instruments: dict[str, Instrument | None] = {}
        self._demand: dict[str, set[Mode]] = {}
        self._demand_dirty = True
        self.stalled_until_ms = 0
        self.frames_total = 0
        self.ticks = 0
        self.connections_total = 0
        self.refused_connections = 0
        self._statuses: dict[str, str] = {}
        self._next_housekeeping = 0
        self.partial_ticks = partial_ticks
        self._previous: dict[tuple[str, Mode], Snapshot] = {}  # the previous live tick
        self.partial_feeds = 0  # live entries that left an unchanged part out

    def market_now(self) -> int:
        """The market's time (epoch ms): real time shifted by `market_offset_ms`."""
        return self._real_now() + self.market_offset_ms

    # ---- connections ----------------------------------------------------------------------

    def register(self, user: User, token: str) -> FeedConnection:
        held = sum(1 for conn in self.connections.values() if conn.user == user)
        if held >= self.max_connections_per_user:
            self.refused_connections += 1
            raise ConnectionLimitError(user.user_id)
        conn = FeedConnection(
            id=next(self._ids),
            user=user,
            token=token,
            subscriptions=Subscriptions(self.limits),
            max_queued=self.max_queued_frames,
            connected_ms=self.market_now(),
        )
        self.connections[conn.id] = conn
        self.connections_total += 1
        now = self.market_now()
        self._statuses = self.model.clock.statuses(now)
        conn.offer_control(frames.market_info_frame(self._statuses, now))
        return conn

    def unregister(self, conn: FeedConnection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self._demand_dirty = True

    def handle_request(self, conn: FeedConnection, raw: bytes | str) -> None:
        conn.requests += 1
        try:
            request = parse_request(raw)
        except RequestError as error:
            conn.bad_requests += 1
            logger.warning("connection %d: ignoring malformed feed request: %s", conn.id, error)
            return
        if request.rejected_keys:
            logger.warning(
                "connection %d: ignoring %d malformed instrument keys",
                conn.id,
                len(request.rejected_keys),
            )
        conn.pending_snapshot.extend(conn.subscriptions.apply(request))
        if request.method == "change_mode":  # no tick in its new mode yet: the next is whole
            self._forget(request.keys)
        self._demand_dirty = True
        self._wake.set()

    # ---- faults --------------------------------------------------------------------------------

    def drop_all(self, code: int = 1011, reason: str = "connection dropped") -> int:
        for conn in self.connections.values():
            conn.close(code, reason)
        return len(self.connections)

    def close_for_invalid_tokens(self) -> int:
        now = self._real_now()  # tokens expire in real time, whatever the market's clock says
        closed = 0
        for conn in self.connections.values():
            if not conn.closing and self.tokens.resolve(conn.token, now) is None:
                conn.close(1008, "token expired")
                closed += 1
        return closed

    def stall(self, seconds: float, everything: bool = False) -> int:
        """No data for `seconds` on the connections open now (`everything`: on every connection,
        new ones too); 0 ends every stall. Returns how many open connections it silences."""
        until = self.market_now() + int(seconds * 1000)
        if everything or seconds == 0:
            self.stalled_until_ms = until
        if not everything or seconds == 0:
            for conn in self.connections.values():
                conn.silent_until_ms = until
        self._wake.set()
        return len(self.connections)

    def send_malformed(self) -> int:
        for conn in self.connections.values():
            conn.offer_control(frames.malformed_frame())
        return len(self.connections)

    def set_tick_interval(self, milliseconds: float) -> None:
        self.tick_interval_ms = milliseconds
        self._wake.set()

    # ---- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            now_loop = loop.time()
            stalled_for = (self.stalled_until_ms - self.market_now()) / 1000.0
            wait = max(next_tick - now_loop, stalled_for, 0.0)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, 1.0))
            else:
                await asyncio.sleep(0)
            self._wake.clear()
            now = self.market_now()
            try:
                self._housekeeping(now)
                if now < self.stalled_until_ms:
                    continue
                self._send_snapshots(now)
                if loop.time() >= next_tick:
                    self._tick(now)
                    next_tick = max(next_tick + self.tick_interval_ms / 1000.0, loop.time())
            except Exception:  # the loop must outlive any one bad tick
                logger.exception("feed loop iteration failed")

    def _instrument(self, key: str) -> Instrument | None:
        if key not in self._instruments:
            self._instruments[key] = self.model.instrument(key)
        return self._instruments[key]

    def _housekeeping(self, now: int) -> None:
        if now < self._next_housekeeping:
            return
        self._next_housekeeping = now + HOUSEKEEPING_MS
        statuses = self.model.clock.statuses(now)
        if statuses != self._statuses:
            self._statuses = statuses
            frame = frames.market_info_frame(statuses, now)
            for conn in self.connections.values():
                conn.offer_control(frame)
        self.close_for_invalid_tokens()

    def _entries(
        self,
        wanted: dict[str, set[Mode]],
        now: int,
        only_open: bool,
        previous: dict[tuple[str, Mode], Snapshot] | None = None,
    ) -> dict[tuple[str, Mode], bytes]:
        """Each wanted (key, mode)'s entry at `now`. With `previous` (live ticks with partial
        ticks on), the parts unchanged since the (key, mode)'s previous tick are left out, and
        this tick becomes its previous one."""
        entries: dict[tuple[str, Mode], bytes] = {}
        open_segments: dict[str, bool] = {}
        only_open = only_open and self.model.clock.kind != "open"
        snapshot, build, entry = self.model.snapshot, frames.build_feed, frames.feed_entry
        unchanged = frames.unchanged_parts
        for key, modes in wanted.items():
            instrument = self._instrument(key)
            if instrument is None:
                continue
            if only_open:
                segment = instrument.segment
                is_open = open_segments.get(segment)
                if is_open is None:
                    is_open = self.model.clock.is_open(segment, now)
                    open_segments[segment] = is_open
                if not is_open:
                    continue
            try:
                if len(modes) == 1:  # the common case, without the set arithmetic below
                    (mode,) = modes
                    depth = 30 if mode is Mode.FULL_D30 else 5
                    snap = snapshot(instrument, now, _DETAIL[mode], depth)
                else:
                    detail = max(_DETAIL[mode] for mode in modes)
                    depth = 30 if Mode.FULL_D30 in modes else 5
                    snap = snapshot(instrument, now, detail, depth)
                for mode in modes:
                    same = 0
                    if previous is not None:
                        same = unchanged(snap, previous.get((key, mode)), mode)
                        previous[(key, mode)] = snap
                    self.partial_feeds += same != 0
                    feed = build(snap, mode, instrument.is_index, same)
                    entries[(key, mode)] = entry(key, feed)
            except Exception:  # one broken instrument must not silence the others
                logger.exception("cannot simulate %s; it gets no data from now on", key)
                self._instruments[key] = None
        return entries

    def _send_snapshots(self, now: int) -> None:
        waiting = [
            conn
            for conn in self.connections.values()
            if conn.pending_snapshot and conn.silent_until_ms <= now
        ]
        for conn in waiting:
            keys, conn.pending_snapshot = conn.pending_snapshot, []
            active = conn.subscriptions.active
            wanted = {key: {active[key]} for key in keys if key in active}
            self._forget(wanted)  # their next live entries must not refer to ticks it never got
            entries = self._entries(wanted, now, only_open=False)
            for chunk in _chunks(list(entries.values())):
                conn.offer_control(frames.initial_frame(chunk, now))
                conn.feeds_offered += len(chunk)

    def _current_demand(self) -> dict[str, set[Mode]]:
        if self._demand_dirty:
            demand: dict[str, set[Mode]] = {}
            for conn in self.connections.values():
                for key, mode in conn.subscriptions.active_pairs:
                    demand.setdefault(key, set()).add(mode)
            self._demand = demand
            self._previous = {
                (key, mode): snap
                for (key, mode), snap in self._previous.items()
                if mode in demand.get(key, ())
            }
            self._demand_dirty = False
        return self._demand

    def _tick(self, now: int) -> None:
        demand = self._current_demand()
        if not demand:
            return
        self.ticks += 1
        previous = self._previous if self.partial_ticks else None
        entries = self._entries(demand, now, only_open=True, previous=previous)
        if not entries:
            return
        built: dict[frozenset[tuple[str, Mode]], list[tuple[bytes, int]]] = {}
        for conn in self.connections.values():
            if conn.silent_until_ms > now:
                self._missed(conn)
                continue
            signature = conn.subscriptions.signature
            batch = built.get(signature)
            if batch is None:
                parts = [entries[p] for p in conn.subscriptions.active_pairs if p in entries]
                batch = [(frames.live_frame(chunk, now), len(chunk)) for chunk in _chunks(parts)]
                built[signature] = batch
            for frame, feeds in batch:
                if not conn.offer_live(frame, feeds):
                    self._missed(conn)

    def _missed(self, conn: FeedConnection) -> None:
        """`conn` did not get this tick: its keys' next live entries are whole."""
        self._forget(conn.subscriptions.active)

    def _forget(self, keys: Iterable[str]) -> None:
        """The next live entries of `keys` (every mode) are whole."""
        previous = self._previous
        if previous:
            for key in keys:
                for mode in Mode:
                    previous.pop((key, mode), None)

    def stats(self) -> dict[str, object]:
        return {
            "connections": [conn.stats() for conn in self.connections.values()],
            "connections_total": self.connections_total,
            "refused_connections": self.refused_connections,
            "frames_sent": self.frames_total,
            "ticks": self.ticks,
            "tick_interval_ms": self.tick_interval_ms,
            "stalled": self.market_now() < self.stalled_until_ms,
            "partial_ticks": self.partial_ticks,
            "partial_feeds": self.partial_feeds,
        }


def _chunks(parts: list[bytes]) -> list[list[bytes]]:
    return [parts[i : i + MAX_FEEDS_PER_FRAME] for i in range(0, len(parts), MAX_FEEDS_PER_FRAME)]
