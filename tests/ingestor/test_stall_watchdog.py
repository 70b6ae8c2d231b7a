"""The stall watchdog against the simulator and a real Redis: a feed that stays connected and
answers pings but sends no data is resubscribed, then reconnected; a closed market is not."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis

from services.ingestor.service import Ingestor
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.ingestor.conftest import (
    Listener,
    StartIngestor,
    connection_ids,
    put_demand,
    sample,
)
from tests.support.simulator import SimulatorHandle, running_simulator
from tests.support.waiting import eventually

IDX = "NSE_INDEX|Nifty 50"
CHANNEL = rc.tick_channel(Mode.LTPC, IDX)


def states(ear: Listener) -> list[str]:
    """The ingestor states announced on INGESTOR_EVENTS, repeats collapsed."""
    seen: list[str] = []
    for payload in ear.on(rc.INGESTOR_EVENTS):
        state = str(orjson.loads(payload)["state"])
        if not seen or seen[-1] != state:
            seen.append(state)
    return seen


async def streaming(
    start: StartIngestor, redis_client: aioredis.Redis, silence: float, **settings: object
) -> Ingestor:
    """An ingestor with that silence limit, asked for the index by a gateway."""
    ingestor = await start(ingestor_silence_seconds=silence, **settings)
    await put_demand(redis_client, "gw", {IDX: {Mode.LTPC}})
    return ingestor


async def test_a_stalled_connection_is_resubscribed_then_replaced_and_updates_resume(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await streaming(start_ingestor, redis_client, 1.0)
    async with Listener(redis_url, [CHANNEL, rc.INGESTOR_EVENTS]) as ear:
        await ear.wait(CHANNEL, 1)
        (stalled,) = await connection_ids(simulator)
        assert await simulator.stall(3600) == 1  # this connection only, for an hour
        await eventually(lambda: ingestor.readiness() == (False, "stalled"), "not ready: stalled")
        await eventually(
            lambda: sample(ingestor, "stalls_total", action="reconnect") >= 1, "a reconnection"
        )
        seen = len(ear.on(CHANNEL))
        await ear.wait(CHANNEL, seen + 3)  # updates again, from a fresh connection
        await eventually(lambda: ingestor.readiness() == (True, "connected"), "ready again")
        await eventually(lambda: states(ear)[-1:] == ["connected"], "connected announced")
    assert stalled not in await connection_ids(simulator)
    assert sample(ingestor, "stalls_total", action="resubscribe") == 1
    assert sample(ingestor, "upstream_failures_total", reason="stalled") >= 1
    assert "stalled" in states(ear)


async def test_a_resubscription_that_brings_data_back_keeps_the_connection(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    # A long limit: the stall is ended by hand between the resubscription and a reconnection.
    ingestor = await streaming(start_ingestor, redis_client, 3.0)
    async with Listener(redis_url, [CHANNEL]) as ear:
        await ear.wait(CHANNEL, 1)
        before = await connection_ids(simulator)
        requests = (await simulator.stats())["connections"][0]["requests"]
        await simulator.stall(3600)
        await eventually(
            lambda: sample(ingestor, "stalls_total", action="resubscribe") == 1, "resubscribed"
        )
        connection = (await simulator.stats())["connections"][0]
        assert connection["requests"] == requests + 2  # unsub, then sub
        await simulator.stall(0)  # the snapshot the sub asked for goes out, then live data
        seen = len(ear.on(CHANNEL))
        await ear.wait(CHANNEL, seen + 3)
        await eventually(lambda: not ingestor.upstream.stalled, "the stall over")
    assert await connection_ids(simulator) == before
    assert sample(ingestor, "stalls_total", action="reconnect") == 0


async def test_a_closed_market_is_quiet_not_stalled(
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    limit = 0.5
    # A Sunday on the exchange calendar: every segment NORMAL_CLOSE, snapshots but no ticks.
    async with running_simulator(
        simulator_market_clock="ist", simulator_market_clock_start="2026-01-04T11:00:00"
    ) as closed:
        ingestor = await streaming(
            start_ingestor, redis_client, limit, upstox_base_url=closed.http_url
        )
        async with Listener(redis_url, [CHANNEL]) as ear:
            await ear.wait(CHANNEL, 1)  # the snapshot
            before = await connection_ids(closed)
            await asyncio.sleep(6 * limit)  # silent for many limits, the watchdog checking
        assert len(ear.on(CHANNEL)) == 1
        assert await connection_ids(closed) == before
        assert ingestor.readiness() == (True, "connected")
    assert sample(ingestor, "stalls_total", action="resubscribe") == 0
    assert sample(ingestor, "stalls_total", action="reconnect") == 0
