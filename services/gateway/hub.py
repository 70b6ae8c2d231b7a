"""The hub: one replica's fan-out engine wired to Redis.

One pub/sub connection (`pubsub.PubSubLink`) carries every tick channel this replica's clients
want (one SUBSCRIBE per channel however many clients hold it) plus the market-info and ingestor
event channels. Its protocol callback feeds ticks straight to the pure `FanOut`; one timer per
coalescing window flushes frames. The replica's demand (key -> modes) is written to its hash
under a lease, promptly on change, and a heartbeat keeps the lease. When Redis goes away clients
stay connected and are told; on recovery the hub resubscribes, rewrites its demand and resends
every client's snapshot.

Pub/sub commands are written without waiting, in the order they are issued; a client's
subscribe waits for a PING barrier only when one of its channels is not yet confirmed, so its
snapshot (read after the barrier) can never miss an update published in between.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from pydantic import ValidationError

from services.gateway import commands
from services.gateway.broker import Broker, cancel_and_wait
from services.gateway.commands import Decision
from services.gateway.fanout import Channel, FanOut, Sink, Subscriber
from services.gateway.protocol import (
    Command,
    ErrorCode,
    FeedItem,
    ProtocolError,
    Snapshot,
    Subscribe,
    Unsubscribe,
    pong_frame,
    status_frame,
)
from services.gateway.settings import GatewaySettings
from services.gateway.timing import FLUSH_BUCKETS, LAG_BUCKETS, Buckets, tick_ts_ms
from services.gateway.wsframe import text_frame
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_link import REDIS_ERRORS, guarded

logger = logging.getLogger(__name__)

SUBSCRIBE_CHUNK = 1000  # keys per MGET
OVERDUE = 0.025  # a flush this late (s) means overload: conflate instead of flushing early
LAG_SAMPLE_EVERY = 16  # tick messages per lag sample
UNKNOWN = "unknown"


@dataclass(slots=True)
class HubStats:
    connections: int = 0  # accepted WebSocket connections, ever
    rejected: Counter[str] = field(default_factory=Counter)  # handshakes refused, by reason
    errors: Counter[str] = field(default_factory=Counter)  # error frames sent, by code
    control_frames: int = 0
    control_bytes: int = 0
    slow_dropped: int = 0
    idle_dropped: int = 0
    oversize_closed: int = 0
    redis_reconnects: int = 0
    demand_writes: int = 0


class Hub:
    """The fan-out engine of one replica. `start()` in the app's lifespan, `stop()` at the end."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.replica_id = settings.gateway_replica_id
        self.fanout = FanOut()
        self.stats = HubStats()
        self.clients: dict[Subscriber, None] = {}
        self.ingestor_state = UNKNOWN
        self.ingestor_epoch = ""
        self.market_info: bytes | None = None
        self.refused: dict[str, tuple[set[Mode], str]] = {}
        self._demand_key = rc.demand_key(self.replica_id)
        self._lease = settings.gateway_demand_lease_seconds
        self.broker = Broker(settings.redis_url, self, (_MARKET_INFO_EVENTS, _INGESTOR_EVENTS))
        # Clients hear of every change of the Redis health, down or back up.
        self.broker.health.on_fail.append(self._announce_status)
        self.broker.health.on_recover.append(self._announce_status)
        self._tasks: list[asyncio.Task[None]] = []
        self._demand_dirty: set[str] = set()
        self._demand_wake = asyncio.Event()
        self._refused_wake = asyncio.Event()
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.tick_lag = Buckets(LAG_BUCKETS)  # upstream frame time -> received here (sampled)
        self.flush_time = Buckets(FLUSH_BUCKETS)  # one flush pass, writing every due frame
        self._sample_countdown = 0
        self._flush_due = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.broker.open()
        for name, coroutine in (
            ("link", self.broker.run()),
            ("demand", self._demand_loop()),
            ("heartbeat", self._heartbeat_loop()),
            ("refused", self._refused_loop()),
        ):
            self._tasks.append(asyncio.create_task(coroutine, name=f"gateway-{name}"))

    async def stop(self) -> None:
        """Stop the tasks and withdraw this replica's demand at once (a crash lets it lapse)."""
        linked = self.broker.connected  # cancelling the link task ends the connection
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if linked:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(self._demand_key)
                    pipe.publish(rc.DEMAND_EVENTS, self.replica_id)
                    await guarded(pipe.execute())
            except REDIS_ERRORS as error:
                logger.warning("could not withdraw demand at shutdown: %s", error)
        await self.broker.close()

    @property
    def redis(self) -> aioredis.Redis:
        return self.broker.redis

    @property
    def redis_up(self) -> bool:
        """Redis is up as clients are told: from the end of a resync until the link fails."""
        return self.broker.health.ok

    # ---- clients ---------------------------------------------------------------------------

    def register(self, sink: Sink) -> Subscriber:
        """A client connected: greet it with the market status and the service status."""
        sub = Subscriber(sink)
        self.clients[sub] = None
        self.stats.connections += 1
        if self.market_info is not None:
            self.send(sub, self.market_info)
        self.send(sub, self._status_payload())
        return sub

    def unregister(self, sub: Subscriber) -> None:
        if self.clients.pop(sub, 0) is None:
            self._channels_closed(self.fanout.remove(sub))

    def resume(self, sub: Subscriber) -> None:
        if self.fanout.resume(sub):
            self._schedule_flush()

    def send(self, sub: Subscriber, payload: bytes) -> None:
        """Send one control frame (ack, error, status...): never conflated, never delayed."""
        if sub.closed:
            return
        frame = text_frame(payload)
        self.stats.control_frames += 1
        self.stats.control_bytes += len(frame)
        sub.sink.send_frame(frame)

    def send_error(self, sub: Subscriber, error: ProtocolError) -> None:
        self.count_error(error.code)
        self.send(sub, error.frame())

    def count_error(self, code: ErrorCode) -> None:
        self.stats.errors[code] += 1

    def broadcast(self, payload: bytes) -> None:
        frame = text_frame(payload)
        for sub in self.clients:
            if not sub.closed:
                self.stats.control_frames += 1
                self.stats.control_bytes += len(frame)
                sub.sink.send_frame(frame)

    async def handle(self, sub: Subscriber, command: Command) -> None:
        """Carry out one client request (a client's requests run one at a time, in order)."""
        if isinstance(command, Subscribe):
            limit = self.settings.gateway_max_keys_per_client
            decision = commands.subscribe(self.fanout, sub, command, limit)
        elif isinstance(command, Unsubscribe):
            decision = commands.unsubscribe(self.fanout, sub, command)
        elif isinstance(command, Snapshot):
            decision = commands.snapshot(sub, command)
        else:
            self.send(sub, pong_frame(command.request_id))
            return
        self._apply(sub, decision)
        if decision.snapshot is None:
            return
        await self._send_snapshot(sub, decision.snapshot)
        if isinstance(command, Subscribe):
            # After the snapshot: the refusals known by then are the ones reported.
            refused = commands.refusals(decision.snapshot, self.refused, command.request_id)
            self._apply(sub, refused)

    def _apply(self, sub: Subscriber, decision: Decision) -> None:
        """Carry out a decision's channel changes and send its frames (not its snapshot)."""
        self._channels_closed(list(decision.closed))
        self._channels_opened(list(decision.opened))
        for code in decision.errors:
            self.count_error(code)
        for frame in decision.frames:
            self.send(sub, frame)

    # ---- snapshots -------------------------------------------------------------------------

    async def _send_snapshot(self, sub: Subscriber, channels: Sequence[Channel]) -> None:
        resolved = await self._resolve(channels)
        frame = self.fanout.complete(sub, [(channel, resolved[channel]) for channel in channels])
        if frame is not None:
            sub.sink.send_frame(frame)

    async def _resolve(self, channels: Iterable[Channel]) -> dict[Channel, FeedItem | None]:
        """Each channel's snapshot value: from memory when a confirmed live subscription has
        delivered one, else the last value in Redis (or what is known, if Redis is away)."""
        channels = list(dict.fromkeys(channels))
        resolved: dict[Channel, FeedItem | None] = {ch: ch.latest for ch in channels}
        if not channels or not self.broker.connected:
            return resolved
        if not all(ch.ready for ch in channels) and not await self.broker.confirm():
            return resolved
        stale = [ch for ch in channels if not ch.fresh]
        for start in range(0, len(stale), SUBSCRIBE_CHUNK):
            chunk = stale[start : start + SUBSCRIBE_CHUNK]
            versions = [ch.version for ch in chunk]
            try:
                values = await guarded(
                    self.redis.mget([rc.last_value_key(ch.mode, ch.key) for ch in chunk])
                )
            except REDIS_ERRORS as error:
                self.broker.failed(error)
                return resolved
            for channel, value, version in zip(chunk, values, versions, strict=True):
                resolved[channel] = self.fanout.resolve(channel, _bytes(value), version)
        return resolved

    async def _resnapshot_all(self) -> None:
        """After a Redis outage: every client gets a fresh snapshot of all its keys."""
        resolved = await self._resolve(self.fanout.channels.values())
        for sub in list(self.clients):
            if sub.closed or not sub.subs:
                continue
            items = [(ch, resolved.get(ch, ch.latest)) for ch in sub.subs.values()]
            frame = self.fanout.complete(sub, items)
            if frame is not None:
                sub.sink.send_frame(frame)

    # ---- live updates ----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None or self._loop is None:
            return
        interval = self.settings.flush_interval
        self._flush_due = self._loop.time() + interval
        if interval > 0:
            self._flush_handle = self._loop.call_later(interval, self._flush)
        else:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._flush_due = math.inf
        started = time.perf_counter()
        if self.fanout.flush():
            self.flush_time.observe(time.perf_counter() - started)

    def on_message(self, name: bytes, data: bytes) -> None:
        if name == _MARKET_INFO_EVENTS:
            self.market_info = data
            self.broadcast(data)
        elif name == _INGESTOR_EVENTS:
            self._on_ingestor_status(data)
        else:
            self._sample_countdown -= 1
            if self._sample_countdown <= 0:
                self._sample_countdown = LAG_SAMPLE_EVERY
                ts = tick_ts_ms(data)
                if ts is not None:
                    self.tick_lag.observe(max(0.0, time.time() - ts / 1000))
            # A flush running late means the replica cannot keep up with its input: stop
            # multiplying frames for keys that tick again before their pending flush.
            fanout = self.fanout
            fanout.eager = self._loop is None or self._loop.time() < self._flush_due + OVERDUE
            if fanout.publish(name, data):
                self._schedule_flush()

    def _on_ingestor_status(self, data: bytes | None) -> None:
        state, epoch = _ingestor_state(data)
        self._refused_wake.set()
        if state != self.ingestor_state or epoch != self.ingestor_epoch:
            self.ingestor_state, self.ingestor_epoch = state, epoch
            self._announce_status()

    def _status_payload(self) -> bytes:
        if not self.redis_up:
            message = "Redis is unreachable: live updates pause and resume when it is back"
        elif self.ingestor_state == "connected":
            message = "live"
        elif self.ingestor_state == UNKNOWN:
            message = "no ingestor is reporting: updates resume when one runs"
        else:
            message = f"the ingestor is {self.ingestor_state.replace('_', ' ')}"
        return status_frame(self.redis_up, self.ingestor_state, message)

    def _announce_status(self) -> None:
        self.broadcast(self._status_payload())

    # ---- channels and the broker -----------------------------------------------------------

    def _channels_opened(self, channels: list[Channel]) -> None:
        if not channels:
            return
        self.broker.subscribe([channel.name for channel in channels])
        self._demand_changed(channel.key for channel in channels)

    def _channels_closed(self, channels: list[Channel]) -> None:
        if not channels:
            return
        self.broker.unsubscribe([channel.name for channel in channels])
        self._demand_changed(channel.key for channel in channels)

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        by_name = self.fanout.by_name
        for name in names:
            channel = by_name.get(name)
            if channel is not None:
                channel.ready = True

    async def on_up(self) -> None:
        """On (re)connection, subscriptions confirmed: rewrite demand, refresh state, report
        Redis up, then resend every client's snapshot."""
        await self._write_demand(full=True)
        values = await guarded(self.redis.mget([rc.MARKET_INFO, rc.INGESTOR_STATUS]))
        info, status = map(_bytes, values)
        await self._refresh_refused(notify=False)
        self.ingestor_state, self.ingestor_epoch = _ingestor_state(status)
        if info is not None and info != self.market_info:
            self.market_info = info
            self.broadcast(info)
        self.broker.health.recovered()  # clients are told (and the backoff starts over)
        if self.stats.redis_reconnects:
            logger.info("Redis link restored; resending snapshots to %d clients", len(self.clients))
        self.stats.redis_reconnects += 1
        await self._resnapshot_all()

    def on_down(self) -> None:
        for channel in self.fanout.channels.values():
            channel.ready = channel.fresh = False

    # ---- demand ----------------------------------------------------------------------------

    def _demand_changed(self, keys: Iterable[str]) -> None:
        self._demand_dirty.update(keys)
        self._demand_wake.set()

    async def _demand_loop(self) -> None:
        while True:
            await self._demand_wake.wait()
            self._demand_wake.clear()
            if not self.broker.connected or not self._demand_dirty:
                continue  # the resync after an outage rewrites all of it
            try:
                await self._write_demand(full=False)
            except REDIS_ERRORS as error:
                self.broker.failed(error)

    async def _write_demand(self, *, full: bool) -> None:
        keys, self._demand_dirty = self._demand_dirty, set()
        if full:
            keys = {key for _, key in self.fanout.channels}
        async with self.redis.pipeline(transaction=True) as pipe:
            if full:
                pipe.delete(self._demand_key)
            for key in keys:
                modes = self.fanout.modes_of(key)
                if modes:
                    pipe.hset(self._demand_key, key, rc.encode_modes(modes))
                elif not full:
                    pipe.hdel(self._demand_key, key)
            pipe.pexpire(self._demand_key, int(self._lease * 1000))
            pipe.publish(rc.DEMAND_EVENTS, self.replica_id)
            try:
                await guarded(pipe.execute())
            except BaseException:
                self._demand_dirty |= keys
                raise
        self.stats.demand_writes += 1

    async def _heartbeat_loop(self) -> None:
        """Keep the demand lease, and notice an ingestor that vanished (its status expired)."""
        interval = self._lease / 3
        while True:
            await asyncio.sleep(interval)
            if not self.broker.connected:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.pexpire(self._demand_key, int(self._lease * 1000))
                    pipe.get(rc.INGESTOR_STATUS)
                    kept, status = await guarded(pipe.execute())
                if not kept and self.fanout.channels:
                    logger.warning("the demand lease had lapsed; writing it again")
                    await self._write_demand(full=True)
                self._on_ingestor_status(status)
            except REDIS_ERRORS as error:
                self.broker.failed(error)

    # ---- refused keys ----------------------------------------------------------------------

    async def _refused_loop(self) -> None:
        while True:
            await self._refused_wake.wait()
            self._refused_wake.clear()
            if not self.broker.connected:
                continue
            try:
                await self._refresh_refused(notify=True)
            except REDIS_ERRORS as error:
                self.broker.failed(error)

    async def _refresh_refused(self, *, notify: bool) -> None:
        raw = await guarded(self.redis.hgetall(rc.INGESTOR_REFUSED))
        refused = {
            (k.decode() if isinstance(k, bytes) else k): rc.decode_refusal(v)
            for k, v in raw.items()
        }
        before, self.refused = self.refused, refused
        if not notify:
            return
        news = {key: value for key, value in refused.items() if before.get(key) != value}
        if not news:
            return
        for sub in self.clients:
            channels = [sub.subs[key] for key in news if key in sub.subs]
            if channels:
                self._apply(sub, commands.refusals(channels, self.refused, None))

    # ---- introspection ---------------------------------------------------------------------

    def snapshot_stats(self) -> dict[str, object]:
        fan = self.fanout.stats
        return {
            "replica": self.replica_id,
            "clients": len(self.clients),
            "channels": len(self.fanout.channels),
            "subscriptions": self.fanout.subscription_count,
            "redis": "up" if self.redis_up else "down",
            "messages": fan.messages,
            "frames": fan.frames,
            "delivered": fan.delivered,
            "conflated": fan.conflated,
            "slow_dropped": self.stats.slow_dropped,
        }


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _ingestor_state(data: bytes | None) -> tuple[str, str]:
    """(state, epoch) from an `IngestorStatus` JSON; absent or unreadable: unknown."""
    if data is None:
        return UNKNOWN, ""
    try:
        status = rc.IngestorStatus.model_validate_json(data)
    except ValidationError:
        logger.warning("ignoring a malformed ingestor status")
        return UNKNOWN, ""
    return status.state, status.epoch


_MARKET_INFO_EVENTS = rc.MARKET_INFO_EVENTS.encode()
_INGESTOR_EVENTS = rc.INGESTOR_EVENTS.encode()


__all__ = ["Hub", "HubStats"]
