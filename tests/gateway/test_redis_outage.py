"""Redis restarts under a running gateway: clients stay, are told, and are resynced."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared import redis_contract as rc
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    GatewayHandle,
    client,
    demand_of,
    eventually,
    publish_tick,
)
from tests.support.redis_server import ContainerRedisServer, LocalRedisServer


async def test_redis_restart_is_survived(
    gateway: GatewayHandle,
    redis_client: aioredis.Redis,
    redis_server: LocalRedisServer | ContainerRedisServer,
) -> None:
    replica = gateway.hub.replica_id
    async with client(gateway.ws_url) as c:
        await c.expect("status", redis="up")
        await c.subscribe([NIFTY, BANK])
        await publish_tick(redis_client, NIFTY, 1)
        await c.collect_until(NIFTY, 1)

        redis_server.stop()
        down = await c.expect("status", redis="down")
        assert "Redis" in down["message"]
        # While Redis is away requests are still answered (and remembered).
        await c.send({"op": "subscribe", "keys": ["NSE_EQ|INE002A01018"], "id": "during"})
        assert (await c.expect("ack", id="during"))["keys"] == ["NSE_EQ|INE002A01018"]
        await c.send({"op": "ping", "id": "p"})
        await c.expect("pong", id="p")

        redis_server.start()  # an empty Redis: no demand, no last values
        await c.expect("status", redis="up")
        resent = await c.expect("initial_feed")
        # The new Redis holds no last values yet: the snapshot carries what the gateway knows.
        assert {k: m["seq"] for k, m in resent["meta"].items()} == {NIFTY: 1}
        async with aioredis.Redis.from_url(redis_server.url) as fresh:  # the old one died
            # The demand was written again, including the key subscribed during the outage.
            assert await demand_of(fresh, replica) == {
                NIFTY: "ltpc",
                BANK: "ltpc",
                "NSE_EQ|INE002A01018": "ltpc",
            }
            assert await fresh.pttl(rc.demand_key(replica)) > 0
            # Live updates flow again, on every channel.
            await publish_tick(fresh, NIFTY, 2)
            await publish_tick(fresh, "NSE_EQ|INE002A01018", 1)
            await c.collect_until(NIFTY, 2)
            await c.collect_until("NSE_EQ|INE002A01018", 1)
            # ...and a fresh snapshot reads the new Redis.
            await c.send({"op": "snapshot", "keys": [NIFTY], "id": "s"})
            await c.expect("ack", id="s")
            assert (await c.expect("initial_feed"))["meta"][NIFTY]["seq"] == 2
    assert c.updates(NIFTY) == [1, 2]
    assert gateway.hub.stats.redis_reconnects == 2
    await eventually(lambda: gateway.hub.redis_up, "the hub to report Redis up")
