"""Snapshots: the value each channel starts a client from, sent as its `initial_feed`.

Owns the rule that lets a snapshot and the live updates after it join without a gap: when a
channel's subscription is not yet confirmed on the current connection, the last value is read
only after the broker's PING barrier on it (on a Redis Cluster, the connection to the master
carrying the channel; a channel whose master is lost is served from memory and sent again once
carried anew), so an update published meanwhile arrives live (and a live
update that lands during the read wins over the value read, see `FanOut.resolve`). A channel
whose confirmed subscription has delivered an update (`fresh`) is served from memory; the others
are read from Redis in chunks, and every value is settled after the last read (a live update
that lands during any chunk's read wins). With Redis away, what is known is sent.

A channel with no value at all (a key nobody has streamed yet: on a fresh stack, the upstream's
own snapshot is still on its way) waits for its first value, up to the first-value wait, while
the others go out at once; the delivery rules are `FanOut`'s (`complete_waiting`, `expire`).
A channel the ingestor refuses does not wait (no value will come), nor do the snapshots resent
after an outage.

It must not change subscriptions nor send anything but `initial_feed` frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Final

from services.gateway.broker import Broker
from services.gateway.fanout import Channel, FanOut, FirstValues, Subscriber
from services.gateway.protocol import FeedItem
from shared.redis_link import REDIS_ERRORS, guarded
from shared.resp import as_bytes

__all__ = ["Snapshots"]

MGET_CHUNK: Final = 1000  # keys per MGET
# Cluster reads at once. redis-py 8.1's cluster client fails a burst of concurrent pipelines on
# connections it is still opening ('NoneType' object has no attribute 'writelines'): measured
# here, 200 concurrent mget_nonatomic on a fresh client failed ~80; at most 4 at a time, none of
# 1,000. Each read is one round trip per master, so the bound costs little.
CLUSTER_READS: Final = 4


class Snapshots:
    """`first_value_wait` (seconds): how long a channel without a value waits for its first;
    0 sends the snapshot without it. `refused`: whether the ingestor refuses a channel."""

    def __init__(
        self,
        fanout: FanOut,
        broker: Broker,
        first_value_wait: float = 0.0,
        refused: Callable[[Channel], bool] | None = None,
    ) -> None:
        self._fanout = fanout
        self._broker = broker
        self._first_value_wait = first_value_wait
        self._refused = refused
        self._cluster_reads = asyncio.Semaphore(CLUSTER_READS)

    async def send(self, sub: Subscriber, channels: Sequence[Channel]) -> None:
        """`sub`'s snapshot of `channels` (it joins their live updates with it)."""
        resolved = await self._resolve(channels)
        items = [(channel, resolved[channel]) for channel in channels]
        if self._first_value_wait <= 0:
            frame, first = self._fanout.complete(sub, items), None
        else:
            refused = self._refused
            hopeless = {ch for ch in channels if refused(ch)} if refused is not None else set()
            frame, first = self._fanout.complete_waiting(sub, items, hopeless)
        if frame is not None:
            sub.sink.send_frame(frame)
        if first is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(self._first_value_wait, self._expire, sub, first)

    def _expire(self, sub: Subscriber, first: FirstValues) -> None:
        frame = self._fanout.expire(sub, first)
        if frame is not None:
            sub.sink.send_frame(frame)

    async def resend_all(
        self, subs: Iterable[Subscriber], names: Collection[bytes] | None = None
    ) -> None:
        """After a Redis outage: every client gets a fresh snapshot of all its keys. With
        `names` (a cluster master's channels, or channels whose slot moved), of those only."""
        if names is None:
            channels: Iterable[Channel] = self._fanout.channels.values()
        else:
            channels = filter(None, map(self._fanout.by_name.get, names))
        resolved = await self._resolve(channels)
        for sub in list(subs):
            if sub.closed or not sub.subs:
                continue
            held: Iterable[Channel] = sub.subs.values()
            if names is not None:
                held = [ch for ch in held if ch in resolved]
            items = [(ch, resolved.get(ch, ch.latest)) for ch in held]
            if not items:
                continue
            frame = self._fanout.complete(sub, items)
            if frame is not None:
                sub.sink.send_frame(frame)

    async def _resolve(self, channels: Iterable[Channel]) -> dict[Channel, FeedItem | None]:
        """Each channel's snapshot value: from memory when a confirmed live subscription has
        delivered one, else the last value in Redis (or what is known, if Redis is away)."""
        channels = list(dict.fromkeys(channels))
        resolved: dict[Channel, FeedItem | None] = {ch: ch.latest for ch in channels}
        broker = self._broker
        if not channels or not broker.connected:
            return resolved
        if not all(ch.ready for ch in channels):
            # Each connection's barrier: on a cluster, a channel whose master is lost is not
            # read (its connection's resync sends it again).
            settled = await broker.settle([ch.name for ch in channels])
            channels = [ch for ch in channels if ch.name in settled]
        stale = [ch for ch in channels if not ch.fresh]
        read: list[tuple[Channel, bytes | None, int]] = []
        for start in range(0, len(stale), MGET_CHUNK):
            chunk = stale[start : start + MGET_CHUNK]
            versions = [ch.version for ch in chunk]
            keys = [ch.wire.last_value_key(ch.mode, ch.key) for ch in chunk]
            try:
                values = await guarded(self._mget(keys))
            except REDIS_ERRORS as error:
                broker.failed(error)
                return resolved
            for channel, value, version in zip(chunk, values, versions, strict=True):
                read.append((channel, None if value is None else as_bytes(value), version))
        # After the last await: an update that arrived during any chunk's read is seen here.
        for channel, stored, version in read:
            resolved[channel] = self._fanout.resolve(channel, stored, version)
        return resolved

    async def _mget(self, keys: list[str]) -> list[bytes | str | None]:
        """The keys' values, in order. One MGET with one Redis; on a cluster an MGET may only
        name one slot, so one per slot, pipelined to each master (redis-py's non-atomic MGET:
        a value and its channel share the instrument's slot, so each is still read after the
        barrier of the connection carrying its channel)."""
        redis = self._broker.redis
        if not self._broker.cluster:
            return list(await redis.mget(keys))
        async with self._cluster_reads:
            return list(await redis.mget_nonatomic(keys))  # type: ignore[attr-defined]
