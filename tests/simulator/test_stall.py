"""Stalls and a closed market as an Upstox client sees them: connected, pings answered, no data."""

from __future__ import annotations

import asyncio

import httpx
import websockets

from shared.proto import pb
from tests.simulator.helpers import authorized_url, bearer, frame_of_type, live_with, send
from tests.support.simulator import SimulatorHandle, running_simulator
from tests.support.waiting import eventually

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


async def frames_sent(sim: SimulatorHandle, index: int) -> int:
    return int((await sim.stats())["connections"][index]["frames_sent"])


async def test_a_stall_silences_the_open_connection_while_a_fresh_one_gets_data() -> None:
    async with (
        running_simulator(simulator_max_connections_per_user=3) as sim,
        websockets.connect(await authorized_url(sim, sim.demo_token)) as stalled,
    ):
        await send(stalled, "sub", [NIFTY])
        await live_with(stalled, NIFTY)
        assert await sim.stall(3600) == 1
        await send(stalled, "sub", [BANK])  # taken in; its snapshot waits for the stall's end
        await eventually(lambda: _settled(sim), "the stalled connection's outbox drained")
        sent = await frames_sent(sim, 0)
        async with websockets.connect(await authorized_url(sim, sim.demo_token)) as fresh:
            await send(fresh, "sub", [NIFTY])
            assert NIFTY in (await frame_of_type(fresh, pb.initial_feed)).feeds
            for _ in range(3):  # three ticks of the loop, none of them for the stalled one
                await live_with(fresh, NIFTY)
            await (await stalled.ping())  # the stalled connection answers pings
            assert await frames_sent(sim, 0) == sent
        await sim.stall(0)
        assert BANK in (await frame_of_type(stalled, pb.initial_feed)).feeds
        await live_with(stalled, NIFTY)


async def _settled(sim: SimulatorHandle) -> bool:
    (conn,) = (await sim.stats())["connections"]
    return int(conn["queued"]) == 0


async def test_a_stall_of_everything_silences_new_connections_too(
    simulator: SimulatorHandle,
) -> None:
    await simulator.stall(3600, scope="all")
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        assert (await frame_of_type(ws, pb.market_info)).marketInfo.segmentStatus
        await send(ws, "sub", [NIFTY])
        await simulator.set_tick_interval(5)
        await asyncio.sleep(0.3)  # dozens of ticks' worth: nothing goes out
        stats = await simulator.stats()
        assert stats["stalled"] and stats["connections"][0]["requests"] == 1
        assert stats["connections"][0]["frames_sent"] == 1  # the market status only
        await simulator.stall(0)
        assert NIFTY in (await frame_of_type(ws, pb.initial_feed)).feeds
        await live_with(ws, NIFTY)


async def test_a_market_clock_started_on_a_sunday_is_closed_and_sends_no_live_data() -> None:
    sunday = "2026-01-04T11:00:00"  # IST; 11:00 on a weekday would be mid-session
    async with running_simulator(
        simulator_market_clock="ist", simulator_market_clock_start=sunday
    ) as sim:
        async with httpx.AsyncClient(base_url=sim.http_url) as client:
            status = await client.get("/v2/market/status/NSE", headers=bearer(sim.demo_token))
        assert status.json()["data"]["status"] == "NORMAL_CLOSE"
        async with websockets.connect(await authorized_url(sim, sim.demo_token)) as ws:
            info = await frame_of_type(ws, pb.market_info)
            assert set(info.marketInfo.segmentStatus.values()) == {pb.NORMAL_CLOSE}
            await send(ws, "sub", [NIFTY])
            assert NIFTY in (await frame_of_type(ws, pb.initial_feed)).feeds  # snapshots answer
            ticks = (await sim.stats())["ticks"]
            await eventually(
                lambda: _ticks_past(sim, ticks + 3),
                "three ticks of the loop over the closed market",
            )
            assert await frames_sent(sim, 0) == 2  # market status and snapshot, nothing live


async def _ticks_past(sim: SimulatorHandle, ticks: int) -> bool:
    return int((await sim.stats())["ticks"]) >= ticks
