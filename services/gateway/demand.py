"""The demand writer: this replica's demand (instrument key -> modes) in its Redis hash.

Owns the hash, its lease and this replica's entry in the demand registry (the sorted set the
ingestor reads to find every replica's hash: SCAN would cover one node of a Redis Cluster).
Changed keys are written promptly (a dirty set, one write loop, one MULTI per round), the whole
hash is rewritten after every (re)connection and when the lease is found lapsed, a heartbeat
keeps the lease and the registry entry (score: when the lease lapses, epoch ms), and a clean
stop withdraws both at once (a crash lets them lapse). Every write is announced on the demand
events channel so the ingestor rescans. The hash, the registry and the channel share the
`{demand}` hash tag, so each MULTI is in one cluster slot.

It reads the modes from the two fan-outs (our JSON wire's and Upstox's, written apart so that
the ingestor produces protobuf entries only for keys some Upstox client wants) and must not
change them, nor know clients or frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from services.gateway.broker import Broker
from services.gateway.fanout import FanOut
from shared import redis_contract as rc
from shared.redis_client import queue_publish
from shared.redis_link import REDIS_ERRORS, guarded

__all__ = ["DemandWriter"]

logger = logging.getLogger(__name__)


class DemandWriter:
    """`changed()` on every channel opened or closed; `run()` and `keep_lease()` as tasks;
    `write_all()` in the broker's resync; `withdraw()` at a clean stop. `writes` counts the
    hash writes, for the metrics."""

    def __init__(
        self,
        replica_id: str,
        lease_seconds: float,
        json: FanOut,
        upstox: FanOut,
        broker: Broker,
        on_ingestor_status: Callable[[bytes | None], None],
    ) -> None:
        self._replica_id = replica_id
        self._key = rc.demand_key(replica_id)
        self._lease_ms = int(lease_seconds * 1000)
        self._heartbeat = lease_seconds / 3
        self._json = json
        self._upstox = upstox
        self._broker = broker
        self._on_ingestor_status = on_ingestor_status
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self.writes = 0

    def changed(self, keys: Iterable[str]) -> None:
        self._dirty.update(keys)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._broker.attempt(self._write_changes)

    async def keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await self._broker.attempt(self._beat)

    async def write_all(self) -> None:
        await self._write(full=True)

    async def withdraw(self) -> None:
        try:
            async with self._broker.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key)
                pipe.zrem(rc.DEMAND_REGISTRY, self._replica_id)
                queue_publish(pipe, rc.DEMAND_EVENTS, self._replica_id)
                await guarded(pipe.execute())
        except REDIS_ERRORS as error:
            logger.warning("could not withdraw demand at shutdown: %s", error)

    async def _write_changes(self) -> None:
        if self._dirty:
            await self._write(full=False)

    async def _write(self, *, full: bool) -> None:
        keys, self._dirty = self._dirty, set()
        if full:
            keys = {key for fanout in (self._json, self._upstox) for _, key in fanout.channels}
        async with self._broker.redis.pipeline(transaction=True) as pipe:
            if full:
                pipe.delete(self._key)
            for key in keys:
                wanted = rc.WireModes(
                    frozenset(self._json.modes_of(key)), frozenset(self._upstox.modes_of(key))
                )
                if wanted.ticks or wanted.entries:
                    pipe.hset(self._key, key, rc.encode_demand(wanted))
                elif not full:
                    pipe.hdel(self._key, key)
            pipe.pexpire(self._key, self._lease_ms)
            self._register(pipe)
            queue_publish(pipe, rc.DEMAND_EVENTS, self._replica_id)
            try:
                await guarded(pipe.execute())
            except BaseException:
                self._dirty |= keys  # written again by the next round (or the resync)
                raise
        self.writes += 1

    async def _beat(self) -> None:
        """Keep the lease; the same round trip reads the ingestor's status, whose expiry is how
        a vanished ingestor is noticed."""
        async with self._broker.redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(self._key, self._lease_ms)
            self._register(pipe)
            pipe.get(rc.INGESTOR_STATUS)
            kept, _, status = await guarded(pipe.execute())
        if not kept and (self._json.channels or self._upstox.channels):
            logger.warning("the demand lease had lapsed; writing it again")
            await self._write(full=True)
        self._on_ingestor_status(status)

    def _register(self, pipe: Any) -> None:
        expires = int(time.time() * 1000) + self._lease_ms
        pipe.zadd(rc.DEMAND_REGISTRY, {self._replica_id: expires})
