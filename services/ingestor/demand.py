"""Reading the gateways' demand from Redis: every live replica's hash, found with SCAN.

A replica's hash has a TTL lease that the replica renews; when a replica dies its hash lapses,
and the next scan no longer sees it. Events on `DEMAND_EVENTS` only make the scan happen sooner.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from shared import redis_contract as rc
from shared.instruments import Mode
from shared.resp import as_text

logger = logging.getLogger(__name__)


async def read_demand(client: aioredis.Redis) -> dict[str, dict[str, set[Mode]]]:
    """replica id -> (instrument key -> modes) for every demand hash present now."""
    names = [as_text(name) async for name in client.scan_iter(match=rc.DEMAND_PATTERN, count=500)]
    if not names:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        tables = await pipe.execute(raise_on_error=False)
    demand: dict[str, dict[str, set[Mode]]] = {}
    for name, table in zip(names, tables, strict=True):
        if not isinstance(table, dict):
            continue  # a key of another type under our prefix: not demand
        replica = rc.replica_of_demand_key(name)
        demand[replica] = {as_text(key): rc.decode_modes(value) for key, value in table.items()}
    return demand
