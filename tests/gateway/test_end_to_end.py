"""The whole data path: simulator (as Upstox) -> ingestor -> Redis -> gateway replicas -> clients.

Nothing is faked: the ingestor holds the simulator's V3 feed with the demo user's token, reads
the replicas' demand, and publishes what the simulator streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.ingestor.service import Ingestor
from services.ingestor.settings import IngestorSettings
from shared import redis_contract as rc
from shared.ports import free_port
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    RELIANCE,
    WAIT,
    Client,
    StartGateway,
    client,
    demand_of,
    eventually,
)
from tests.support.simulator import SimulatorHandle, simulator  # noqa: F401

INGESTOR_FAST: dict[str, Any] = {
    "ingestor_lease_ttl_ms": 1500,
    "ingestor_demand_rescan_seconds": 0.25,
    "ingestor_demand_grace_seconds": 0.5,
    "ingestor_backoff_initial": 0.05,
    "ingestor_backoff_max": 0.5,
}


@pytest.fixture
async def ingestor(
    redis_url: str,
    redis_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> AsyncIterator[Ingestor]:
    """A running ingestor with the demo user logged in, as auth would have stored it."""
    await SessionStore(redis_client).save(
        Profile(user_id="E2E001"), access_token=simulator.demo_token
    )
    running = Ingestor(
        IngestorSettings(redis_url=redis_url, upstox_base_url=simulator.http_url, **INGESTOR_FAST)
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def upstream(sim: SimulatorHandle) -> dict[str, str]:
    """Key -> mode subscribed on the simulator's feed, over all its connections."""
    merged: dict[str, str] = {}
    for connection in (await sim.stats())["connections"]:
        merged.update(connection["subscriptions"])
    return merged


def live_values(c: Client, key: str) -> dict[int, object]:
    return {
        f["meta"][key]["seq"]: f["feeds"][key]
        for f in c.frames
        if f["type"] == "live_feed" and key in f["feeds"]
    }


async def test_two_replicas_stream_the_simulators_ticks(
    start_gateway: StartGateway,
    ingestor: Ingestor,
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    one = await start_gateway(gateway_replica_id="gw-e2e-1")
    two = await start_gateway(gateway_replica_id="gw-e2e-2")
    async with client(one.ws_url) as a, client(two.ws_url) as b:
        for c in (a, b):
            await c.expect("status")
            await c.subscribe([NIFTY], mode="ltpc", rid="l")
            await c.subscribe([RELIANCE], mode="full", rid="f")
        await eventually(
            lambda: _upstream_has(simulator, {NIFTY: "ltpc", RELIANCE: "full"}),
            "the ingestor to subscribe upstream",
        )
        # Both replicas' clients now receive the same stream; wait for a common stretch.
        target_a = await _some_seq(a, NIFTY)
        target_b = await _some_seq(b, NIFTY)
        target = max(target_a, target_b) + 3
        for c in (a, b):
            await c.collect_until(NIFTY, target)
            await _some_seq(c, RELIANCE)
    for c in (a, b):
        seqs = c.updates(NIFTY)
        assert seqs == sorted(set(seqs)), "per-instrument sequence numbers only increase"
    common = set(live_values(a, NIFTY)) & set(live_values(b, NIFTY))
    assert len(common) >= 3
    for seq in common:
        assert live_values(a, NIFTY)[seq] == live_values(b, NIFTY)[seq]
    # The values are Upstox's own shapes for the mode asked.
    nifty = next(iter(live_values(a, NIFTY).values()))
    assert isinstance(nifty, dict) and set(nifty) == {"ltpc"} and "ltp" in nifty["ltpc"]
    reliance = next(iter(live_values(a, RELIANCE).values()))
    assert isinstance(reliance, dict) and "marketFF" in reliance["fullFeed"]


async def _upstream_has(sim: SimulatorHandle, expected: dict[str, str]) -> bool:
    current = await upstream(sim)
    return all(current.get(key) == mode for key, mode in expected.items())


async def _some_seq(c: Client, key: str) -> int:
    """The sequence number of the next live update of `key` this client receives."""
    while True:
        frame = await c.recv()
        if frame["type"] == "live_feed" and key in frame["meta"]:
            seq: int = frame["meta"][key]["seq"]
            return seq


@contextlib.asynccontextmanager
async def gateway_process(
    redis_url: str, replica: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`tickstream gateway` as its own process (so that it can really be killed)."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "GATEWAY_REPLICA_ID": replica,
        "GATEWAY_DEMAND_LEASE_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    executable = Path(sys.executable).with_name("tickstream")
    process = await asyncio.create_subprocess_exec(
        str(executable), "gateway", "--port", str(port), env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/readyz")).status_code == 200
                return False

            await eventually(ready, "the gateway process to be ready", within=WAIT * 2)
        yield f"ws://127.0.0.1:{port}/ws", process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_a_killed_replicas_demand_lapses_and_upstream_is_unsubscribed(
    start_gateway: StartGateway,
    ingestor: Ingestor,
    redis_url: str,
    redis_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    survivor = await start_gateway(gateway_replica_id="gw-survivor")
    async with client(survivor.ws_url) as kept:
        await kept.expect("status")
        await kept.subscribe([NIFTY])
        async with (
            gateway_process(redis_url, "gw-doomed") as (url, process),
            client(url) as doomed,
        ):
            await doomed.expect("status")
            await doomed.subscribe([BANK], mode="full")
            assert await demand_of(redis_client, "gw-doomed") == {BANK: "full"}
            await eventually(
                lambda: _upstream_has(simulator, {NIFTY: "ltpc", BANK: "full"}),
                "both keys subscribed upstream",
            )
            process.send_signal(signal.SIGKILL)  # a crash: no chance to withdraw anything
            await process.wait()
        # The lease lapses, the ingestor notices and unsubscribes what nobody wants any more.
        await eventually(
            lambda: _gone(redis_client, rc.demand_key("gw-doomed")), "the doomed demand to lapse"
        )
        await eventually(
            lambda: _upstream_is(simulator, {NIFTY: "ltpc"}), "BANK unsubscribed upstream"
        )
        # The surviving replica's client is unaffected.
        seq = await _some_seq(kept, NIFTY)
        await kept.collect_until(NIFTY, seq + 1)
        assert await demand_of(redis_client, "gw-survivor") == {NIFTY: "ltpc"}


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


async def _upstream_is(sim: SimulatorHandle, expected: dict[str, str]) -> bool:
    return await upstream(sim) == expected
