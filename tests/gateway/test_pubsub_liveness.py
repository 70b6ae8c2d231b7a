"""The pub/sub connection's liveness probe: a link TCP keeps open but that delivers nothing is
noticed, rebuilt and resynced. The faults come from a real TCP relay between the gateway and
Redis (`tests/support/relay.py`)."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from tests.gateway.conftest import NIFTY, client, eventually, publish_tick, running_gateway
from tests.support.redis_server import ContainerRedisServer, LocalRedisServer
from tests.support.relay import tcp_relay


async def probes_failed(http_url: str) -> float:
    """The gateway's own count, as a scraper reads it."""
    async with httpx.AsyncClient(trust_env=False) as http:
        text = (await http.get(f"{http_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("tickstream_gateway_pubsub_probes_failed_total "):
            return float(line.split()[1])
    raise AssertionError("no pubsub_probes_failed metric")


@pytest.mark.parametrize("fault", ["black_hole", "rewire"])
async def test_a_silent_pubsub_link_is_detected_rebuilt_and_resynced(
    fault: str,
    redis_url: str,
    redis_server: LocalRedisServer | ContainerRedisServer,
    redis_client: aioredis.Redis,
) -> None:
    """black_hole: the link stops forwarding both ways and stays open (a half-dead link).
    rewire: a proxy moves the gateway's connections to new ones, to a server that does not
    hold its subscriptions (a failover behind a proxy). Neither closes anything."""
    async with tcp_relay(redis_server.host, redis_server.port) as relay:
        relayed = f"redis://{relay.host}:{relay.port}/0"
        async with (
            running_gateway(relayed, gateway_pubsub_probe_seconds=0.5) as gateway,
            client(gateway.ws_url) as c,
        ):
            await c.expect("status", redis="up")
            await c.subscribe([NIFTY])
            await publish_tick(redis_client, NIFTY, 1)
            await c.collect_until(NIFTY, 1)
            assert await probes_failed(gateway.http_url) == 0

            broken = relay.black_hole() if fault == "black_hole" else await relay.rewire()
            assert broken >= 1  # the pub/sub connection at least
            await publish_tick(redis_client, NIFTY, 2)  # stored, but never delivered live
            await c.expect("status", redis="down")
            await c.expect("status", redis="up")
            # The fresh snapshot is read from Redis over the new connection: it holds the
            # update the silent link lost.
            resent = await c.expect("initial_feed")
            assert resent["meta"][NIFTY]["seq"] == 2
            await publish_tick(redis_client, NIFTY, 3)
            await c.collect_until(NIFTY, 3)
            assert c.updates(NIFTY) == [1, 3]
            assert await probes_failed(gateway.http_url) >= 1
            assert gateway.hub.stats.redis_reconnects == 2
            await eventually(lambda: gateway.hub.redis_up, "the hub to report Redis up")
