"""The fan-out core: channels, subscribers, conflation and coalesced frames. Pure, no I/O.

A `Channel` is one (mode, instrument key) pair with a Redis channel behind it, shared by every
subscriber of this replica that wants that key in that mode. Each tick is split and spliced once
into a `FeedItem` (the same bytes go to every subscriber); a subscriber keeps a pending map of
channel -> item, flushed as one `live_feed` frame when the rules below say so.

Delivery rules:
- a subscriber whose socket keeps up gets every update: a second update of a key that is still
  pending flushes the pending frame first, so nothing is superseded -- unless the fan-out is not
  `eager` (the hub clears it while its own flushes run late, i.e. the replica is overloaded):
  then the newer value supersedes the pending one, which sheds work instead of multiplying
  frames when there is no time for them;
- a subscriber that is *behind* (its sink refuses more: the write buffer is over its bound) is
  not written to; its pending map keeps only the latest item per key (conflation), which is
  flushed as soon as the sink drains; it never receives a value older than one it already has;
- writes never wait: a sink buffers, so one slow subscriber never delays another;
- a partial value (a live tick that left out unchanged parts, flagged in its metadata) goes out
  as it came, but never supersedes a pending value outright: conflated, it is merged onto it
  part-wise, so the subscriber still gets every part the superseded value carried.

When frames go out (`FlushPacer`, applied by the hub): a frame waits for others only when that
pays. What a frame costs is mostly the kernel's send (`bench.flushpass`: 8.5 of 12.3 µs per
small frame on loopback), so merging updates saves CPU only when it saves frames, and CPU is
only worth saving when the gateway is short of it:
- an update goes out as soon as the gateway has nothing more to read: after the event-loop
  pass that read it and one more pass that brought no new tick (a burst that Redis writes in
  several pieces still shares one frame). Updates arriving meanwhile (the rest of the same read,
  the reads that piled up while the last pass ran) share the frame, so under load the batches
  grow by themselves;
- the busier the gateway, the longer a first pending update waits for more before that check:
  nothing below `IDLE_LOAD` of a core (the process's own CPU time, sampled), the whole bound
  from `BUSY_LOAD`, in proportion between. At light load frames go out at once; at heavy load
  they are coalesced as a fixed window would, with its CPU per delivery;
- `GATEWAY_FLUSH_INTERVAL_MS` is that bound: while ticks keep arriving pass after pass, pending
  frames go out once the first of them has waited that long (0: after every pass);
- a flush later than its bound by `OVERDUE` means the replica is overloaded: the fan-out stops
  being `eager` until a flush is on time again;
- a subscriber whose socket still holds earlier bytes (its `backlog`, short of the bound that
  makes it behind) is busy too: its updates wait for the next flush that finds the socket
  empty, and at most `GATEWAY_FLUSH_INTERVAL_MS`, then go out in one frame behind the earlier
  bytes. A slow link gets fewer, fuller frames instead of a queue of small ones.

Snapshots (`complete`): a subscriber starts a channel from its snapshot value, sent in an
`initial_feed`; it gets the channel's live updates from then on, never one older than that
value. A channel with no value yet (nothing in memory, nothing in Redis) may wait for its first
(`complete_waiting`, up to the gateway's first-value wait):
- the keys that have values go out at once in the request's `initial_feed`; when none has, that
  frame waits for the first value to arrive;
- a waiting key's first update is delivered in an `initial_feed` (coalesced with the other
  first values of the same flush), never as a `live_feed`, and always ahead of the subscriber's
  `live_feed` frames;
- at the end of the wait (`expire`), a first value still pending goes out as the
  `initial_feed`; a key still without a value is absent from every `initial_feed` and its
  updates arrive as `live_feed`; a request that has sent no `initial_feed` yet gets an empty
  one, so every snapshot request is answered by an `initial_feed` within the wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Container, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from services.gateway.protocol import FeedItem
from services.gateway.wires import JSON, Wire
from shared.instruments import Mode
from shared.redis_contract import is_partial


class Sink(Protocol):
    """Where a subscriber's frames go: a WebSocket connection, written without waiting."""

    def send_frame(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame for sending."""

    def backlog(self) -> int:
        """Bytes written and not yet taken by the kernel (0: the last frame is gone)."""


class Channel:
    """One (mode, key): its Redis channel name, its subscribers and its latest update."""

    __slots__ = (
        "encoded_key",
        "fresh",
        "joining",
        "key",
        "latest",
        "mode",
        "name",
        "ready",
        "subscribers",
        "version",
        "wire",
    )

    def __init__(self, mode: Mode, key: str, wire: Wire = JSON) -> None:
        self.mode = mode
        self.key = key
        self.wire = wire
        self.name = wire.channel_name(mode, key)
        self.encoded_key = wire.encoded_key(key)
        self.subscribers: dict[Subscriber, None] = {}  # receive live updates
        self.joining: dict[Subscriber, None] = {}  # waiting for their snapshot
        self.latest: FeedItem | None = None
        self.version = 0  # live updates received so far
        self.ready = False  # the Redis subscription is confirmed on the current connection
        self.fresh = False  # `latest` came live over the confirmed subscription, and is whole

    @property
    def partial(self) -> bool:
        """`latest` is a partial value: not a snapshot by itself."""
        return self.latest is not None and is_partial(self.latest.meta)

    @property
    def refs(self) -> int:
        return len(self.subscribers) + len(self.joining)

    def __repr__(self) -> str:
        return f"Channel({self.mode.value}, {self.key!r}, refs={self.refs})"


class FirstValues:
    """One snapshot request's channels that had no value: their first values are its
    `initial_feed`. `sent` once the request has sent an `initial_feed` (it then sends no empty
    one at the end of the wait)."""

    __slots__ = ("channels", "sent")

    def __init__(self, channels: Sequence[Channel], *, sent: bool) -> None:
        self.channels = channels
        self.sent = sent


class Subscriber:
    """One client's state in the fan-out: its keys (one mode each), its pending updates and the
    channels whose first value it waits for."""

    __slots__ = ("awaiting", "behind", "closed", "pending", "sink", "subs", "wire")

    def __init__(self, sink: Sink, wire: Wire = JSON) -> None:
        self.sink = sink
        self.wire = wire  # of the fan-out it joins
        self.subs: dict[str, Channel] = {}
        self.pending: dict[Channel, FeedItem] = {}
        self.awaiting: dict[Channel, FirstValues] = {}  # their next update is an initial_feed
        self.behind = False
        self.closed = False


@dataclass(slots=True)
class FanOutStats:
    messages: int = 0  # tick messages received from Redis
    frames: int = 0  # live/initial feed frames written
    bytes: int = 0
    delivered: int = 0  # instrument updates written to clients
    conflated: int = 0  # updates superseded (subscriber behind, or the replica overloaded)
    first_value_waits: int = 0  # subscribed keys whose initial_feed waited for a first value
    first_value_misses: int = 0  # of those, keys still without a value when the wait ended


@dataclass(frozen=True, slots=True)
class Join:
    channel: Channel
    opened: bool  # a new channel: subscribe to it in Redis
    closed: Channel | None  # the key's previous channel (another mode) if nobody holds it now


OVERDUE: Final = 0.025  # a flush this late (s) past its bound means overload
IDLE_LOAD: Final = 0.2  # the gateway's CPU (share of a core) below which frames never wait
BUSY_LOAD: Final = 0.4  # ... and from which they wait the whole bound
LOAD_SAMPLE: Final = 0.25  # seconds between CPU samples


class FlushPacer:
    """When the pending frames go out (the module docstring's rules). The hub calls `begin`
    when the first update becomes pending, sleeps for the window it returns, then asks `due`
    once per event-loop pass with the count of ticks received so far until it answers True,
    and flushes. `observe` feeds it the process's CPU time. Pure: time comes in."""

    __slots__ = ("_bound", "_cpu", "_deadline", "_sampled", "_seen", "load")

    def __init__(self, bound: float) -> None:
        """`bound`: GATEWAY_FLUSH_INTERVAL_MS in seconds."""
        self._bound = bound
        self._deadline = math.inf  # no flush pending
        self._seen = -1
        self._sampled = -math.inf
        self._cpu = 0.0
        self.load = 0.0  # share of a core the process used, smoothed over recent samples

    def observe(self, now: float, cpu: float) -> None:
        """The process's CPU time (s) at `now`: sampled every `LOAD_SAMPLE` at most."""
        elapsed = now - self._sampled
        if elapsed < LOAD_SAMPLE:
            return
        if elapsed < 4 * LOAD_SAMPLE:  # a longer gap was idle: no flush asked to observe
            self.load = 0.5 * self.load + 0.5 * (cpu - self._cpu) / elapsed
        else:
            self.load = 0.0
        self._sampled, self._cpu = now, cpu

    def begin(self, now: float) -> float:
        """A first update is pending: the seconds to wait before asking `due` (0: none)."""
        self._deadline = now + self._bound
        self._seen = -1  # the pass that began it may be followed by more of the same read
        share = (self.load - IDLE_LOAD) / (BUSY_LOAD - IDLE_LOAD)
        return self._bound * min(1.0, max(0.0, share))

    def due(self, now: float, received: int) -> bool:
        """Whether to flush now: the last pass brought no new tick, or the bound is reached."""
        if received == self._seen or now >= self._deadline:
            self._deadline = math.inf
            return True
        self._seen = received
        return False

    def overloaded(self, now: float) -> bool:
        """A flush is pending and later than its bound by `OVERDUE`."""
        return now > self._deadline + OVERDUE


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class FanOut:
    """One wire's fan-out (`wires`): its channels and subscribers all speak that wire."""

    def __init__(
        self,
        clock_ms: Callable[[], int] = _epoch_ms,
        wire: Wire = JSON,
        demand: dict[str, int] | None = None,
    ) -> None:
        """`demand`: another wire's `demand`, to share: the replica's demand is one."""
        self.wire = wire
        self.channels: dict[tuple[Mode, str], Channel] = {}
        self.by_name: dict[bytes, Channel] = {}
        # key -> its channels here (one per mode wanted), of every fan-out sharing it
        self.demand: dict[str, int] = {} if demand is None else demand
        self.dirty: dict[Subscriber, None] = {}
        self.stats = FanOutStats()
        self.eager = True  # flush early rather than supersede (see the module docstring)
        self.held = 0  # subscribers the last `flush` held: their sockets still held bytes
        self._clock_ms = clock_ms

    # ---- membership ------------------------------------------------------------------------

    def join(self, sub: Subscriber, mode: Mode, key: str) -> Join:
        """Subscribe `sub` to `key` in `mode` (leaving its other mode, if any). The subscriber
        waits in `channel.joining` until `complete` hands it its snapshot."""
        current = sub.subs.get(key)
        if current is not None and current.mode is mode:
            return Join(current, opened=False, closed=None)
        closed = self._leave(sub, current) if current is not None else None
        channel = self.channels.get((mode, key))
        opened = channel is None
        if channel is None:
            channel = Channel(mode, key, self.wire)
            self.channels[(mode, key)] = channel
            self.by_name[channel.name] = channel
            self.demand[key] = self.demand.get(key, 0) + 1
        channel.joining[sub] = None
        sub.subs[key] = channel
        return Join(channel, opened, closed)

    def part(self, sub: Subscriber, key: str) -> tuple[bool, Channel | None]:
        """Unsubscribe `sub` from `key`: (whether it held the key, the channel if now unused)."""
        channel = sub.subs.pop(key, None)
        if channel is None:
            return False, None
        return True, self._leave(sub, channel)

    def remove(self, sub: Subscriber) -> list[Channel]:
        """Forget a subscriber (its connection ended); returns the channels nobody holds now."""
        sub.closed = True
        self.dirty.pop(sub, None)
        closed = [c for c in (self._leave(sub, ch) for ch in sub.subs.values()) if c is not None]
        sub.subs.clear()
        sub.pending.clear()
        sub.awaiting.clear()
        return closed

    def _leave(self, sub: Subscriber, channel: Channel) -> Channel | None:
        channel.subscribers.pop(sub, None)
        channel.joining.pop(sub, None)
        sub.pending.pop(channel, None)
        sub.awaiting.pop(channel, None)
        if channel.refs:
            return None
        del self.channels[(channel.mode, channel.key)]
        del self.by_name[channel.name]
        if self.demand[channel.key] == 1:
            del self.demand[channel.key]
        else:
            self.demand[channel.key] -= 1
        return channel

    def modes_of(self, key: str) -> set[Mode]:
        """The modes anybody here wants `key` in (this replica's demand for it)."""
        return {mode for mode in Mode if (mode, key) in self.channels}

    @property
    def subscription_count(self) -> int:
        return sum(channel.refs for channel in self.channels.values())

    # ---- snapshots -------------------------------------------------------------------------

    def resolve(
        self, channel: Channel, stored: bytes | None, version_before: int
    ) -> FeedItem | None:
        """The snapshot value of `channel`: the last value read from Redis (`stored`, fetched
        when the channel had seen `version_before` live updates) unless a whole live update
        arrived since, which is at least as new; partial ones are merged onto the value read."""
        moved = channel.version != version_before
        if stored is None or (moved and not channel.partial):
            return channel.latest
        item = self.wire.item(channel.encoded_key, stored)
        if moved and channel.latest is not None:
            item = self.wire.merged(channel.encoded_key, item, channel.latest)
        channel.latest = item
        return item

    def complete(
        self, sub: Subscriber, items: Sequence[tuple[Channel, FeedItem | None]]
    ) -> bytes | None:
        """Finish a subscribe or a snapshot request: joiners start receiving live updates, and
        the `initial_feed` frame is returned (None if `sub` is gone). Pending updates of those
        channels are dropped: the snapshot carries a value at least as new. Channels without a
        value are left out (a first value already awaited stays awaited)."""
        if sub.closed:
            return None
        present, _ = self._start(sub, items)
        return self._frame(True, present, self._stamp())

    def complete_waiting(
        self,
        sub: Subscriber,
        items: Sequence[tuple[Channel, FeedItem | None]],
        hopeless: Container[Channel] = (),
    ) -> tuple[bytes | None, FirstValues | None]:
        """`complete`, where channels without a value wait for their first (see the module
        docstring), except `hopeless` ones (no value will come: the ingestor refuses them).
        Returns the `initial_feed` frame (None while every channel waits, or if `sub` is gone)
        and the record to `expire` when the wait ends (None: nothing waits)."""
        if sub.closed:
            return None, None
        present, missing = self._start(sub, items)
        missing = [channel for channel in missing if channel not in hopeless]
        first: FirstValues | None = None
        if missing:
            first = FirstValues(missing, sent=bool(present))
            for channel in missing:
                sub.awaiting[channel] = first
            self.stats.first_value_waits += len(missing)
            if not present:
                return None, first
        return self._frame(True, present, self._stamp()), first

    def expire(self, sub: Subscriber, first: FirstValues) -> bytes | None:
        """The wait of `first` is over: first values still pending go out in an `initial_feed`
        now, keys still without one stop waiting (their updates come live); a request that has
        sent no `initial_feed` gets one, maybe empty. None: nothing to send."""
        if sub.closed:
            return None
        items: list[FeedItem] = []
        for channel in first.channels:
            if sub.awaiting.get(channel) is not first:
                continue  # delivered, left, or awaited again by a later request
            del sub.awaiting[channel]
            item = sub.pending.pop(channel, None)
            if item is None:
                self.stats.first_value_misses += 1
            else:
                items.append(item)
        if first.sent and not items:
            return None
        first.sent = True
        self.stats.delivered += len(items)
        return self._frame(True, items, self._stamp())

    def _start(
        self, sub: Subscriber, items: Sequence[tuple[Channel, FeedItem | None]]
    ) -> tuple[list[FeedItem], list[Channel]]:
        """Move `sub` onto the live updates of the channels it still holds; returns the values
        to send and the channels that have none."""
        present: list[FeedItem] = []
        missing: list[Channel] = []
        for channel, item in items:
            if sub.subs.get(channel.key) is not channel:
                continue  # left (or switched mode) meanwhile
            if channel.joining.pop(sub, 0) is None:
                channel.subscribers[sub] = None
            sub.pending.pop(channel, None)
            if item is None:
                missing.append(channel)
                continue
            present.append(item)
            first = sub.awaiting.pop(channel, None)
            if first is not None:
                first.sent = True
        self.stats.delivered += len(present)
        return present, missing

    # ---- live updates ----------------------------------------------------------------------

    def publish(self, name: bytes, payload: bytes) -> bool:
        """Take one tick from Redis. Returns whether a flush became due (someone got news)."""
        stats = self.stats
        stats.messages += 1
        channel = self.by_name.get(name)
        if channel is None:
            return False  # a channel nobody here holds any more
        wire = self.wire
        item = wire.item(channel.encoded_key, payload)
        partial = is_partial(item.meta)
        if partial and channel.joining and channel.latest is not None:
            # A snapshot is being read: keep every part since, for `resolve` to apply on it.
            channel.latest = wire.merged(channel.encoded_key, channel.latest, item)
        else:
            channel.latest = item
        channel.version += 1
        if channel.ready:
            channel.fresh = not partial
        dirty = self.dirty
        merged_onto: FeedItem | None = None  # subscribers behind mostly share a pending value
        merged = item
        for sub in channel.subscribers:
            pending = sub.pending
            update = item
            if channel in pending:
                if sub.behind or not self.eager:
                    stats.conflated += 1
                    if partial:  # superseding it would lose the parts it carried
                        older = pending[channel]
                        if older is not merged_onto:
                            merged_onto = older
                            merged = wire.merged(channel.encoded_key, older, item)
                        update = merged
                else:
                    # The client keeps up: deliver the earlier update now instead of dropping it.
                    self._write_pending(sub, self._stamp())
            elif not pending:
                dirty[sub] = None
            pending[channel] = update
        return bool(channel.subscribers)

    def resume(self, sub: Subscriber) -> bool:
        """`sub`'s sink drained: its pending updates are due. Returns whether there are any."""
        sub.behind = False
        if sub.pending and not sub.closed:
            self.dirty[sub] = None
            return True
        return False

    def flush(self, *, hold: bool = False) -> int:
        """Write one coalesced `live_feed` frame to every subscriber with news that is not
        behind (those wait for `resume`). Returns the number of frames written. `hold`: a
        subscriber whose socket still holds earlier bytes stays due instead (`held` counts
        them) until a flush without `hold`."""
        self.held = 0
        if not self.dirty:
            return 0
        stamp = self._stamp()
        dirty, self.dirty = self.dirty, {}
        frame_of = self.wire.frame
        # A frame of one update is the same bytes for every subscriber it goes to: built once
        # per flush (keyed by the item's identity; the item is kept so the id stays its own).
        # When frames are about as many as deliveries, most frames are such.
        alone: dict[int, tuple[FeedItem, bytes]] = {}
        written = delivered = size = held = 0
        # The hot loop: one frame per subscriber, so `_write_pending` is inlined but for the
        # rare first values, and the counters are added once.
        for sub in dirty:
            pending = sub.pending
            if not pending or sub.behind:
                continue
            if hold and sub.sink.backlog():
                self.dirty[sub] = None
                held += 1
                continue
            if sub.awaiting:
                self._write_pending(sub, stamp)
                continue
            if len(pending) == 1:
                (item,) = pending.values()
                built = alone.get(id(item))
                if built is None:
                    built = alone[id(item)] = (item, frame_of(False, (item,), stamp))
                frame = built[1]
            else:
                frame = frame_of(False, pending.values(), stamp)
            delivered += len(pending)
            size += len(frame)
            written += 1
            pending.clear()
            sub.sink.send_frame(frame)
        stats = self.stats
        stats.frames += written
        stats.bytes += size
        stats.delivered += delivered
        self.held = held
        return written

    def _write_pending(self, sub: Subscriber, stamp: bytes) -> None:
        if sub.awaiting:
            self._write_first(sub, stamp)
            if not sub.pending:
                return
        pending = sub.pending
        frame = self._frame(False, pending.values(), stamp)
        self.stats.delivered += len(pending)
        pending.clear()
        sub.sink.send_frame(frame)

    def _write_first(self, sub: Subscriber, stamp: bytes) -> None:
        """The pending first values of channels `sub` waits for: one `initial_feed`, written
        before anything else pending."""
        pending, awaiting = sub.pending, sub.awaiting
        arrived = [channel for channel in awaiting if channel in pending]
        if not arrived:
            return
        items: list[FeedItem] = []
        for channel in arrived:
            awaiting.pop(channel).sent = True
            items.append(pending.pop(channel))
        self.stats.delivered += len(items)
        sub.sink.send_frame(self._frame(True, items, stamp))

    def _stamp(self) -> bytes:
        return self.wire.stamp(self._clock_ms())

    def _frame(self, initial: bool, items: Collection[FeedItem], stamp: bytes) -> bytes:
        frame = self.wire.frame(initial, items, stamp)
        self.stats.frames += 1
        self.stats.bytes += len(frame)
        return frame
