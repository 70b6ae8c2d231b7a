"""The broker: this replica's Redis side, the way centrifuge separates a broker from its hub.

Owns, for the replica's whole life: the command client (a bounded pool), the pub/sub
connections (`shard.Shard`: one with one Redis, one per master on a Redis Cluster) and the set
of channel names they must carry, and, on a cluster, the topology: which master carries each
channel (`cluster.SlotMap`, from CLUSTER SLOTS), refreshed when a connection is lost, when a
node drops channels (their slot moved: Redis pushes `sunsubscribe`) or refuses them (-MOVED),
and while a master stays lost (until a replica is promoted). A channel whose master changed is
subscribed on its new one, and once confirmed there the hub re-snapshots it; channels on
healthy masters are untouched. `health` answers "is Redis up, as clients are told?" (a
`shared.redis_link.RedisHealth`: up while every connection is served and resynced);
`connected` says whether any pub/sub connection is being served at all, resync included.
Everything else reaches the hub through `BrokerHandler`.

It must not know about clients, frames, channels' subscribers or demand: it deals in channel
names and bytes. Ticks go from the pub/sub protocol straight to the handler's `on_message`.
Ordering and liveness (PING barriers, the probe) are per connection: see `shard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Final, Protocol

import redis.asyncio as aioredis

from services.gateway.cluster import Address, SlotMap, fetch_slot_map, node_url, seed_address
from services.gateway.shard import LINK_ERRORS, Shard
from shared.redis_client import connect_redis
from shared.redis_link import REDIS_ERRORS, RedisHealth, guarded
from shared.tasks import cancel_and_wait
from shared.upstox.backoff import Backoff

TOPOLOGY_ROUND_SECONDS: Final = 15.0  # one topology round, every node asked (each bounded)

__all__ = ["LINK_ERRORS", "Broker", "BrokerHandler"]

logger = logging.getLogger(__name__)

POOL_SIZE: Final = 16  # command connections (snapshots, demand, status); pub/sub has its own


class BrokerHandler(Protocol):
    """What the broker reports to the hub. `names` None: every channel (one Redis, or all)."""

    def on_message(self, name: bytes, data: bytes) -> None:
        """A pub/sub message: every tick goes through here, so it must not block."""

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        """These channels' subscriptions are in effect on their current connection."""

    async def on_up(self, names: Collection[bytes] | None) -> None:
        """A connection carries (and has confirmed) these channels anew: resync them, then call
        `recovered()` when clients may be told. Raising drops the connection."""

    def on_down(self, names: Collection[bytes] | None) -> None:
        """No subscription to these channels is in effect until their next `on_up`."""


class Broker:
    """`open()` before use, `run()` as a task, `close()` at the end. `cluster`: REDIS_URL
    names any node of a Redis Cluster."""

    def __init__(
        self,
        url: str,
        handler: BrokerHandler,
        channels: Iterable[bytes] = (),
        *,
        probe_seconds: float = 5.0,
        cluster: bool = False,
    ) -> None:
        self._url = url
        self._handler = handler
        self._probe_seconds = probe_seconds
        self.cluster = cluster
        self.health = RedisHealth(up=False)
        self._redis: aioredis.Redis | None = None
        self._names: dict[bytes, None] = dict.fromkeys(channels)  # to carry, wherever
        self._shards: dict[Address, Shard] = {}
        self._tasks: dict[Shard, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()  # moved channels' resyncs, retirements
        self._probes_retired = 0
        # On a cluster: where each channel is carried, and the channels waiting for a master.
        self._where: dict[bytes, Shard] = {}
        self._homeless: dict[bytes, None] = {}
        self._slot_map: SlotMap | None = None
        self._refresh = asyncio.Event()
        self.topology_refreshes = 0
        self.channels_moved = 0
        if not cluster:
            self._single: Shard | None = self._shard_for(seed_address(url), url)
            self._single.names = self._names  # one connection carries everything
        else:
            self._single = None

    # ---- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        self._redis = connect_redis(self._url, cluster=self.cluster, max_connections=POOL_SIZE)

    async def close(self) -> None:
        await cancel_and_wait([*self._background, *self._tasks.values()])
        if self._redis is not None:
            await guarded(self._redis.aclose())
            self._redis = None
        self.health.stopped()

    @property
    def redis(self) -> aioredis.Redis:
        """The command client (the pub/sub connections are separate)."""
        if self._redis is None:
            raise RuntimeError("the broker is not open")
        return self._redis

    @property
    def connected(self) -> bool:
        """A pub/sub connection is being served (its resync included)."""
        return any(shard.connected for shard in self._shards.values())

    @property
    def probes_failed(self) -> int:
        """Liveness probes not answered in time (each lost a connection)."""
        return self._probes_retired + sum(shard.probes_failed for shard in self._shards.values())

    def nodes(self) -> list[Shard]:
        """The pub/sub connections, for metrics: each its node's label, state and connects."""
        return list(self._shards.values())

    def failed(self, error: BaseException) -> None:
        """Any user of Redis that saw it fail: with one Redis, drop the pub/sub connection and
        reconnect; on a cluster, look at the topology again (a master may be gone)."""
        if self._single is not None:
            self._single.failed(error)
        else:
            self._refresh.set()

    def recovered(self) -> None:
        """The hub's resync is done: clients are told Redis is up once every connection is."""
        if not self._homeless and all(shard.up for shard in self._shards.values()):
            self.health.recovered()

    async def attempt(self, work: Callable[[], Awaitable[None]]) -> None:
        """One round of a background loop's Redis work, done only while connected (the resync
        after an outage redoes it all). A Redis failure is reported, not raised."""
        if not self.connected:
            return
        try:
            await guarded(work())
        except REDIS_ERRORS as error:
            self.failed(error)

    async def run(self) -> None:
        """Serve the pub/sub connections for the replica's life."""
        if self._single is not None:
            await self._single.run()
            return
        try:
            await self._follow_topology()
        finally:
            await cancel_and_wait(self._tasks.values())

    # ---- the connections' reports (`shard.ShardEvents`) ------------------------------------

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        self._handler.on_confirmed(names)

    async def on_shard_up(self, shard: Shard) -> None:
        await self._handler.on_up(None if self._single is not None else list(shard.names))
        shard.backoff.reset()

    async def on_shard_down(self, shard: Shard, cause: BaseException) -> None:
        if self._single is None:
            # First: whatever happens below, the topology follower must look for the slots.
            self._refresh.set()
        if not self.health.ok:
            logger.debug("Redis still unreachable at %s: %s", shard.label, cause)
        self._handler.on_down(None if self._single is not None else list(shard.names))
        self.health.failed(cause)  # on the way down: warns, and the hub tells its clients
        if self._single is not None and self._redis is not None:
            await _drop_idle_commands(self._redis)

    def on_moved(self, shard: Shard, names: tuple[bytes, ...], reason: str) -> None:
        logger.info("%d channels left %s (%s): rerouting", len(names), shard.label, reason)
        self.channels_moved += len(names)
        for name in names:
            if self._where.get(name) is shard:
                del self._where[name]
            if name in self._names:
                self._homeless[name] = None
        self._handler.on_down(names)
        self._refresh.set()

    # ---- cluster topology ------------------------------------------------------------------

    async def _follow_topology(self) -> None:
        """Route the channels by the cluster's slot map: at start, then whenever something
        moved or a connection was lost, again (with backoff) until nothing is left unrouted."""
        backoff = Backoff(0.1, 2.0)
        self._refresh.set()
        while True:
            await self._refresh.wait()
            self._refresh.clear()
            known = [*self._shards, *(self._slot_map.nodes if self._slot_map else ())]
            try:
                # Bounded: every node's reply is, but a round must never stall the follower.
                async with asyncio.timeout(TOPOLOGY_ROUND_SECONDS):
                    slot_map = await fetch_slot_map(self._url, known)
                moved = self._apply(slot_map) if slot_map is not None else False
            except Exception:  # the follower is the cluster's only way back: it must go on
                logger.exception("Redis Cluster: reading the slot map failed; trying again")
                slot_map, moved = None, False
            self.topology_refreshes += 1
            unsettled = bool(self._homeless) or not all(
                shard.connected for shard in self._shards.values()
            )
            if slot_map is None or moved or unsettled:
                await asyncio.sleep(backoff.next_delay())
                self._refresh.set()
            else:
                backoff.reset()

    def _apply(self, slot_map: SlotMap) -> bool:
        """Move every channel to its slot's master; True if any moved."""
        if self._slot_map is None or slot_map.ranges != self._slot_map.ranges:
            masters = ", ".join(sorted(f"{host}:{port}" for host, port in slot_map.masters))
            logger.info("Redis Cluster: the slots are served by %s", masters)
        self._slot_map = slot_map
        for master in slot_map.masters:
            self._shard_for(master)  # a connection per master, ready for the channels to come
        moved: dict[Shard, list[bytes]] = {}
        for address, names in slot_map.route(self._names).items():
            if address is None:
                self._homeless.update(dict.fromkeys(names))
                continue
            shard = self._shard_for(address)
            for name in names:
                old = self._where.get(name)
                if old is shard and name not in self._homeless:
                    continue
                if old is not None and old is not shard:
                    old.forget([name])
                self._homeless.pop(name, None)
                self._where[name] = shard
                moved.setdefault(shard, []).append(name)
        for shard, names in moved.items():
            logger.debug("%d channels to %s (up: %s)", len(names), shard.label, shard.up)
            if shard.up:
                self._handler.on_down(names)
            shard.subscribe(names)
            if shard.up:  # else the connection's own resync covers them
                task = asyncio.create_task(self._resync(shard, names), name="gateway-moved")
                _keep(self._background, task)
        for address, shard in list(self._shards.items()):
            if address not in slot_map.masters and not shard.names:
                # A lost master that serves no slot any more (back as a replica, or gone).
                logger.info(
                    "Redis Cluster: %s serves no slots; its connection is closed", shard.label
                )
                del self._shards[address]
                self._probes_retired += shard.probes_failed
                serving = self._tasks.pop(shard, None)
                if serving is not None:
                    serving.cancel()
                    _keep(self._background, serving)  # until it has ended
        return bool(moved)

    async def _resync(self, shard: Shard, names: list[bytes]) -> None:
        """Channels moved onto a served connection: once confirmed there, the hub resyncs them."""
        if not await shard.confirm():
            return  # the connection failed: its next one resyncs everything it carries
        names = [name for name in names if self._where.get(name) is shard]
        try:
            await guarded(self._handler.on_up(names))
        except REDIS_ERRORS as error:
            self.failed(error)

    def _shard_for(self, address: Address, url: str | None = None) -> Shard:
        shard = self._shards.get(address)
        if shard is None:
            shard = Shard(
                url or node_url(self._url, address),
                self,
                address,
                self._handler.on_message,  # the hub's bound method: no hop per tick
                cluster=self.cluster,
                probe_seconds=self._probe_seconds,
            )
            self._shards[address] = shard
            if self.cluster:
                self._tasks[shard] = asyncio.create_task(shard.run(), name="gateway-link")
        return shard

    # ---- channels --------------------------------------------------------------------------

    def subscribe(self, names: Sequence[bytes]) -> None:
        """Carry these channels from now on (written at once when connected)."""
        if self._single is not None:
            self._single.subscribe(names)  # its names are ours
            return
        self._names.update(dict.fromkeys(names))
        if self._slot_map is None:
            return  # routed with everything once the topology is known
        for address, group in self._slot_map.route(names).items():
            if address is None:
                self._homeless.update(dict.fromkeys(group))
                self._refresh.set()
                continue
            shard = self._shard_for(address)
            for name in group:
                self._where[name] = shard
            shard.subscribe(group)

    def unsubscribe(self, names: Sequence[bytes]) -> None:
        if self._single is not None:
            self._single.unsubscribe(names)
            return
        by_shard: dict[Shard, list[bytes]] = {}
        for name in names:
            self._names.pop(name, None)
            self._homeless.pop(name, None)
            shard = self._where.pop(name, None)
            if shard is not None:
                by_shard.setdefault(shard, []).append(name)
        for shard, group in by_shard.items():
            shard.unsubscribe(group)

    async def settle(self, names: Collection[bytes]) -> set[bytes]:
        """Of `names`, those whose subscriptions are in effect now: a PING barrier on each
        connection carrying some of them (a snapshot read after it misses no update)."""
        if self._single is not None:
            return set(names) if await self._single.confirm() else set()
        by_shard: dict[Shard, list[bytes]] = {}
        for name in names:
            shard = self._where.get(name)
            if shard is not None:
                by_shard.setdefault(shard, []).append(name)
        shards = list(by_shard)
        results = await asyncio.gather(*(shard.confirm() for shard in shards))
        return {
            name
            for shard, ok in zip(shards, results, strict=True)
            if ok
            for name in by_shard[shard]
            if self._where.get(name) is shard
        }


def _keep(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    """Hold a background task until it ends (asyncio keeps only a weak reference)."""
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _drop_idle_commands(redis: aioredis.Redis) -> None:
    """The idle command connections go with the pub/sub one: they lead to the same server, and
    one as dead would cost its next command a socket timeout before its retry."""
    with contextlib.suppress(*REDIS_ERRORS):
        await guarded(redis.connection_pool.disconnect(inuse_connections=False))
