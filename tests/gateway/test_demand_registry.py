"""The gateway's entry in the demand registry, as the ingestor reads it (`read_demand`).

A replica is found through the registry, not SCAN (a Redis Cluster's SCAN sees one node): it
registers with its demand, keeps the entry's score a lease ahead with its heartbeat, and
withdraws at a clean stop.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from services.ingestor.demand import read_demand
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.gateway.conftest import NIFTY, client, eventually, running_gateway
from tests.ingestor.conftest import ticks


async def test_a_replica_is_registered_while_it_runs_and_withdrawn_at_stop(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running_gateway(redis_url) as gateway, client(gateway.ws_url) as viewer:
        replica = gateway.hub.replica_id
        await viewer.expect("status")
        await viewer.subscribe([NIFTY])
        assert await read_demand(redis_client) == {replica: {NIFTY: ticks(Mode.LTPC)}}
        score = await redis_client.zscore(rc.DEMAND_REGISTRY, replica)
        lease_ms = gateway.settings.gateway_demand_lease_seconds * 1000
        assert score is not None and 0 < score - time.time() * 1000 <= lease_ms
        # The heartbeat moves the score on.
        await eventually(
            lambda: _score_above(redis_client, replica, score), "the heartbeat's new score"
        )
    assert await redis_client.zscore(rc.DEMAND_REGISTRY, replica) is None
    assert await read_demand(redis_client) == {}


async def _score_above(redis: aioredis.Redis, replica: str, before: float) -> bool:
    now = await redis.zscore(rc.DEMAND_REGISTRY, replica)
    return now is not None and now > before
