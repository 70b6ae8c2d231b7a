"""The gateways' demand, from Redis to the upstream session: read, plan, apply, refuse.

Every live gateway replica keeps a demand hash with a TTL lease that it renews, and an entry in
the demand registry (a sorted set, score: when its lease lapses); when a replica dies its hash
lapses, and the next read no longer sees it. `read_demand` finds them all through the registry
(SCAN would cover one node of a Redis Cluster), reads each hash in one pipelined round trip,
and sweeps registry entries long past their lease. `DemandSync` runs while the instance is
active: it reads the demand when `DEMAND_EVENTS` says it changed (and every rescan period,
since nothing announces a lapse), plans it with the pure planner (`subscriptions`), tells the
processor what to render and the upstream session what to subscribe, and writes the refusals
to `INGESTOR_REFUSED`. It owns the plan, the grace period after a Redis recovery and the
memory of the refusals written.

It must NOT send anything to the feed itself (the upstream session does), nor touch the lease
or the status record beyond announcing refusals with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

from services.ingestor.processor import TickProcessor
from services.ingestor.settings import IngestorSettings
from services.ingestor.status import StatusReporter
from services.ingestor.subscriptions import ModeLimits, Plan, Refusal, aggregate_demand, plan
from services.ingestor.upstream import UpstreamSession
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_client import queue_publish
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded
from shared.resp import as_text

__all__ = ["DemandSync", "read_demand", "split_wires", "wanted"]

Render = dict[str, frozenset[Mode]]

logger = logging.getLogger(__name__)


# A registry entry is swept this long after its score: the score is the gateway's wall clock,
# which may run behind ours, so liveness is the hash's own TTL (Redis's clock); the score only
# lets entries of replicas that died be removed at all.
REGISTRY_SWEEP_AFTER_MS = 60_000


async def read_demand(client: aioredis.Redis) -> dict[str, dict[str, rc.WireModes]]:
    """replica id -> (instrument key -> modes per wire) for every registered replica's demand
    hash present now."""
    swept_before = int(time.time() * 1000) - REGISTRY_SWEEP_AFTER_MS
    async with client.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(rc.DEMAND_REGISTRY, "-inf", swept_before)
        pipe.zrange(rc.DEMAND_REGISTRY, 0, -1)
        _, members = await pipe.execute()
    replicas = [as_text(member) for member in members]
    if not replicas:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for replica in replicas:
            pipe.hgetall(rc.demand_key(replica))
        tables = await pipe.execute(raise_on_error=False)
    demand: dict[str, dict[str, rc.WireModes]] = {}
    for replica, table in zip(replicas, tables, strict=True):
        if not isinstance(table, dict) or not table:
            continue  # lapsed (or not a hash): no demand
        demand[replica] = {as_text(key): rc.decode_demand(value) for key, value in table.items()}
    return demand


def split_wires(
    tables: Iterable[Mapping[str, rc.WireModes]],
) -> tuple[dict[str, set[Mode]], dict[str, set[Mode]]]:
    """(JSON ticks, protobuf entries): key -> modes wanted on that wire, by any replica."""
    tables = list(tables)
    ticks = aggregate_demand([{key: w.ticks for key, w in t.items()} for t in tables])
    entries = aggregate_demand([{key: w.entries for key, w in t.items()} for t in tables])
    return ticks, entries


def wanted(render: Mapping[str, frozenset[Mode]], demand: Mapping[str, set[Mode]]) -> Render:
    """The planned modes of each key that `demand` (one wire's) asks for."""
    out: Render = {}
    for key, modes in render.items():
        asked = demand.get(key)
        if asked:
            served = modes & asked
            if served:
                out[key] = served
    return out


class DemandSync:
    def __init__(
        self,
        settings: IngestorSettings,
        link: RedisLink,
        processor: TickProcessor,
        upstream: UpstreamSession,
        reporter: StatusReporter,
    ) -> None:
        self.plan = Plan()
        self._ticks: Render = {}  # the plan's modes per key, on each wire
        self._entries: Render = {}
        self._settings = settings
        self._link = link
        self._processor = processor
        self._upstream = upstream
        self._reporter = reporter
        self._limits = ModeLimits(
            settings.ingestor_mode_limits, settings.ingestor_combined_mode_limits
        )
        self._static = settings.static_demand()
        self._changed = asyncio.Event()
        self._grace_until = 0.0
        self._refusals_written: dict[str, str] | None = None

    def changed(self) -> None:
        """Demand may have changed: read it now rather than at the next rescan."""
        self._changed.set()

    def reread(self) -> None:
        """Read demand now and write the refusals even if unchanged (an instance that just
        became active, or a Redis that may have lost them)."""
        self._refusals_written = None
        self._changed.set()

    def redis_recovered(self) -> None:
        self._grace_until = time.monotonic() + self._settings.ingestor_demand_grace_seconds
        self.reread()

    @property
    def refused_keys(self) -> int:
        """Keys the current plan refuses: none on a standby, which has no plan."""
        return len(self.plan.refused)

    def forget(self) -> None:
        """No plan any more (the instance became a standby)."""
        self.plan = Plan()
        self._ticks, self._entries = {}, {}

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.ingestor_demand_rescan_seconds):
                    await self._changed.wait()
            self._changed.clear()
            await self._link.wait_up()
            try:
                tables = await guarded(read_demand(self._link.client))
            except REDIS_ERRORS as error:
                self._link.failed(error)
                continue
            await self._replan(tables)

    async def _replan(self, tables: Mapping[str, Mapping[str, rc.WireModes]]) -> None:
        ticks, entries = split_wires(tables.values())
        ticks = aggregate_demand([self._static, ticks])
        if time.monotonic() < self._grace_until:
            # Redis came back empty-handed moments ago: gateways are still rewriting their
            # demand, so keep what is subscribed (and published) rather than drop it and
            # subscribe it again.
            for key, mode in self._upstream.subscribed.items():
                if key in ticks or key in entries:
                    continue
                if key in self._ticks or key in self._entries:
                    ticks[key] = set(self._ticks.get(key, ()))
                    entries[key] = set(self._entries.get(key, ()))
                else:
                    ticks[key] = {mode}
        demand = aggregate_demand([ticks, entries])
        current = self._upstream.subscribed or self.plan.upstream
        new = plan(demand, self._limits, current=current, priority=self._static)
        self.plan = new
        self._ticks, self._entries = wanted(new.render, ticks), wanted(new.render, entries)
        self._processor.set_render(self._ticks, self._entries)
        await self._upstream.subscribe(new.upstream)
        await self._write_refusals(new.refused)

    async def _write_refusals(self, refused: Mapping[str, Refusal]) -> None:
        values = {key: rc.encode_refusal(r.modes, r.reason) for key, r in refused.items()}
        if values == self._refusals_written:
            return
        if values and len(values) != len(self._refusals_written or {}):
            logger.warning("%d demanded keys refused (over Upstox's per-mode limits)", len(values))
        try:
            await guarded(self._replace_refusals(values, self._reporter.current()))
        except REDIS_ERRORS as error:
            self._link.failed(error)
            return
        self._refusals_written = values

    async def _replace_refusals(self, values: dict[str, str], status: rc.IngestorStatus) -> None:
        async with self._link.client.pipeline(transaction=True) as pipe:
            pipe.delete(rc.INGESTOR_REFUSED)
            if values:
                pipe.hset(rc.INGESTOR_REFUSED, mapping=values)  # type: ignore[arg-type]
            queue_publish(pipe, rc.INGESTOR_EVENTS, status.model_dump_json())
            await pipe.execute()
