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
import contextlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.gateway import commands
from services.gateway.commands import Decision
from services.gateway.errors import PubSubClosed, RedisLost
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
from services.gateway.pubsub import PubSubLink
from services.gateway.settings import GatewaySettings
from services.gateway.timing import FLUSH_BUCKETS, LAG_BUCKETS, Buckets, tick_ts_ms
from services.gateway.wsframe import text_frame
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_client import connect_redis
from shared.upstox.backoff import Backoff

logger = logging.getLogger(__name__)

SUBSCRIBE_CHUNK = 1000  # channels per SUBSCRIBE / keys per MGET
BARRIER_TIMEOUT = 10.0
OVERDUE = 0.025  # a flush this late (s) means overload: conflate instead of flushing early
LAG_SAMPLE_EVERY = 16  # tick messages per lag sample
REDIS_POOL_SIZE = 16  # command connections (snapshots, demand, status); pub/sub has its own
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


@dataclass(slots=True)
class _Barrier:
    future: asyncio.Future[bool]
    names: set[bytes]


class Hub:
    """The fan-out engine of one replica. `start()` in the app's lifespan, `stop()` at the end."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.replica_id = settings.gateway_replica_id
        self.fanout = FanOut()
        self.stats = HubStats()
        self.clients: dict[Subscriber, None] = {}
        self.redis_up = False  # as announced to clients: set once a resync has finished
        self._linked = False  # a pub/sub connection is being served (resync included)
        self.ingestor_state = UNKNOWN
        self.ingestor_epoch = ""
        self.market_info: bytes | None = None
        self.refused: dict[str, tuple[set[Mode], str]] = {}
        self._demand_key = rc.demand_key(self.replica_id)
        self._lease = settings.gateway_demand_lease_seconds
        self._redis: aioredis.Redis | None = None
        self._link: PubSubLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._broken = asyncio.Event()
        self._broken_cause: BaseException | None = None
        self._unconfirmed: set[bytes] = set()  # subscribed since the last barrier
        self._last_barrier: asyncio.Future[bool] | None = None
        self._barriers: dict[bytes, _Barrier] = {}
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
        self._redis = connect_redis(self.settings.redis_url, max_connections=REDIS_POOL_SIZE)
        for name, coroutine in (
            ("link", self._link_loop()),
            ("demand", self._demand_loop()),
            ("heartbeat", self._heartbeat_loop()),
            ("refused", self._refused_loop()),
        ):
            self._tasks.append(asyncio.create_task(coroutine, name=f"gateway-{name}"))

    async def stop(self) -> None:
        """Stop the tasks and withdraw this replica's demand at once (a crash lets it lapse)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._redis is not None and self._linked:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.delete(self._demand_key)
                    pipe.publish(rc.DEMAND_EVENTS, self.replica_id)
                    await pipe.execute()
            except (RedisError, OSError) as error:
                logger.warning("could not withdraw demand at shutdown: %s", error)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        self.redis_up = False

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the hub is not started")
        return self._redis

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
        if not channels or not self._linked:
            return resolved
        if not all(ch.ready for ch in channels) and not await self._confirm():
            return resolved
        stale = [ch for ch in channels if not ch.fresh]
        for start in range(0, len(stale), SUBSCRIBE_CHUNK):
            chunk = stale[start : start + SUBSCRIBE_CHUNK]
            versions = [ch.version for ch in chunk]
            try:
                values = await self.redis.mget([rc.last_value_key(ch.mode, ch.key) for ch in chunk])
            except (RedisError, OSError) as error:
                self._link_failed(error)
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

    def _on_message(self, name: bytes, data: bytes) -> None:
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
            self.broadcast(self._status_payload())

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

    # ---- channels and the pub/sub connection -------------------------------------------------

    def _channels_opened(self, channels: list[Channel]) -> None:
        if not channels:
            return
        names = [channel.name for channel in channels]
        if self._link is not None:
            try:
                self._link.subscribe(names)
            except PubSubClosed as error:
                self._link_failed(error)
            else:
                self._unconfirmed.update(names)
        self._demand_changed(channel.key for channel in channels)

    def _channels_closed(self, channels: list[Channel]) -> None:
        if not channels:
            return
        names = [channel.name for channel in channels]
        self._unconfirmed.difference_update(names)
        if self._link is not None:
            try:
                self._link.unsubscribe(names)
            except PubSubClosed as error:
                self._link_failed(error)
        self._demand_changed(channel.key for channel in channels)

    async def _confirm(self) -> bool:
        """Wait until every SUBSCRIBE sent so far is in effect: Redis answers a PING sent behind
        them only after it has carried them out."""
        if self._link is None:
            return False
        if self._unconfirmed or self._last_barrier is None or self._last_barrier.done():
            token = secrets.token_hex(8).encode()
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._barriers[token] = _Barrier(future, self._unconfirmed)
            self._unconfirmed = set()
            self._last_barrier = future
            try:
                self._link.ping(token)
            except PubSubClosed as error:
                self._link_failed(error)
                return False
        future = self._last_barrier
        try:
            return await asyncio.wait_for(asyncio.shield(future), BARRIER_TIMEOUT)
        except TimeoutError:
            self._link_failed(RedisLost("a subscription was not confirmed in time"))
            return False

    def _on_pong(self, token: bytes) -> None:
        barrier = self._barriers.pop(token, None)
        if barrier is None:
            return
        by_name = self.fanout.by_name
        for name in barrier.names:
            channel = by_name.get(name)
            if channel is not None:
                channel.ready = True
        if not barrier.future.done():
            barrier.future.set_result(True)

    def _fail_barriers(self) -> None:
        futures = [barrier.future for barrier in self._barriers.values()]
        self._barriers.clear()
        self._last_barrier = None
        for future in futures:
            if not future.done():
                future.set_result(False)

    # ---- the Redis link --------------------------------------------------------------------

    def _link_failed(self, error: BaseException) -> None:
        """Any user of Redis that saw it fail: drop the pub/sub connection and reconnect."""
        if not self._broken.is_set():
            self._broken_cause = error
        self._broken.set()

    async def _link_loop(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._serve_link(backoff)
            except (RedisError, OSError, RedisLost, TimeoutError) as error:
                if self.redis_up:
                    logger.warning("Redis unreachable (%s); clients stay connected", error)
                else:
                    logger.debug("Redis still unreachable: %s", error)
            self._link_down()
            await asyncio.sleep(backoff.next_delay())

    async def _serve_link(self, backoff: Backoff) -> None:
        """One pub/sub connection's life: connect, resync, serve until it fails."""
        self._broken.clear()
        link = await PubSubLink.open(
            self.settings.redis_url, on_message=self._on_message, on_pong=self._on_pong
        )
        broken = asyncio.create_task(self._broken.wait(), name="gateway-link-watch")
        resync: asyncio.Task[None] | None = None
        try:
            names = [_MARKET_INFO_EVENTS, _INGESTOR_EVENTS, *self.fanout.by_name]
            link.subscribe(names)
            self._link = link
            self._unconfirmed = set(names)
            resync = asyncio.create_task(self._resync(backoff), name="gateway-resync")
            waiting: set[asyncio.Future[Any]] = {link.closed, broken, resync}
            while True:
                done, waiting = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
                if done == {resync} and resync.exception() is None:
                    continue  # resynced: serve until the link fails
                break
            for future in (link.closed, resync):
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            raise RedisLost(f"the Redis link was dropped: {self._broken_cause!r}")
        finally:
            self._link = None
            link.close()
            for task in (broken, resync):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(
                        asyncio.CancelledError, RedisError, OSError, RedisLost, TimeoutError
                    ):
                        await task

    async def _resync(self, backoff: Backoff) -> None:
        """On (re)connection: confirm subscriptions, rewrite demand, refresh state, resend
        snapshots; only then report Redis as up."""
        self._linked = True
        if not await self._confirm():
            raise RedisLost("subscriptions were not confirmed")
        await self._write_demand(full=True)
        info, status = map(_bytes, await self.redis.mget([rc.MARKET_INFO, rc.INGESTOR_STATUS]))
        await self._refresh_refused(notify=False)
        self.redis_up = True
        backoff.reset()
        self.ingestor_state, self.ingestor_epoch = _ingestor_state(status)
        if info is not None and info != self.market_info:
            self.market_info = info
            self.broadcast(info)
        self.broadcast(self._status_payload())
        if self.stats.redis_reconnects:
            logger.info("Redis link restored; resending snapshots to %d clients", len(self.clients))
        self.stats.redis_reconnects += 1
        await self._resnapshot_all()

    def _link_down(self) -> None:
        self._linked = False
        self._link = None
        self._unconfirmed.clear()
        self._fail_barriers()
        for channel in self.fanout.channels.values():
            channel.ready = channel.fresh = False
        if self.redis_up:
            self.redis_up = False
            self.broadcast(self._status_payload())

    # ---- demand ----------------------------------------------------------------------------

    def _demand_changed(self, keys: Iterable[str]) -> None:
        self._demand_dirty.update(keys)
        self._demand_wake.set()

    async def _demand_loop(self) -> None:
        while True:
            await self._demand_wake.wait()
            self._demand_wake.clear()
            if not self._linked or not self._demand_dirty:
                continue  # the resync after an outage rewrites all of it
            try:
                await self._write_demand(full=False)
            except (RedisError, OSError) as error:
                self._link_failed(error)

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
                await pipe.execute()
            except BaseException:
                self._demand_dirty |= keys
                raise
        self.stats.demand_writes += 1

    async def _heartbeat_loop(self) -> None:
        """Keep the demand lease, and notice an ingestor that vanished (its status expired)."""
        interval = self._lease / 3
        while True:
            await asyncio.sleep(interval)
            if not self._linked:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.pexpire(self._demand_key, int(self._lease * 1000))
                    pipe.get(rc.INGESTOR_STATUS)
                    kept, status = await pipe.execute()
                if not kept and self.fanout.channels:
                    logger.warning("the demand lease had lapsed; writing it again")
                    await self._write_demand(full=True)
                self._on_ingestor_status(status)
            except (RedisError, OSError) as error:
                self._link_failed(error)

    # ---- refused keys ----------------------------------------------------------------------

    async def _refused_loop(self) -> None:
        while True:
            await self._refused_wake.wait()
            self._refused_wake.clear()
            if not self._linked:
                continue
            try:
                await self._refresh_refused(notify=True)
            except (RedisError, OSError) as error:
                self._link_failed(error)

    async def _refresh_refused(self, *, notify: bool) -> None:
        raw = await self.redis.hgetall(rc.INGESTOR_REFUSED)
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
