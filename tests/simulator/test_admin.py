"""Faults on demand through the admin API, observed as an Upstox client observes them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from google.protobuf.message import DecodeError
from websockets.exceptions import ConnectionClosed

from shared.proto import pb
from tests.simulator.helpers import (
    assert_error,
    authorized_url,
    frame_of_type,
    get,
    live_with,
    next_frame,
    send,
)
from tests.support.simulator import SimulatorHandle, running_simulator

NIFTY = "NSE_INDEX|Nifty 50"


async def test_admin_needs_the_key_and_is_off_without_one(simulator: SimulatorHandle) -> None:
    async with httpx.AsyncClient(base_url=simulator.http_url) as client:
        wrong = await client.get("/admin/stats", headers={"X-Admin-Key": "guess"})
        missing = await client.post("/admin/drop-connections")
    assert_error(wrong, 403, "SIM_ADMIN_FORBIDDEN")
    assert_error(missing, 403, "SIM_ADMIN_FORBIDDEN")
    async with httpx.AsyncClient(base_url=simulator.http_url) as client:
        reserved = await client.post(
            "/admin/drop-connections",
            params={"code": 1006},
            headers={"X-Admin-Key": simulator.admin_key},
        )
    assert_error(reserved, 400, "UDAPI100036")
    async with (
        running_simulator(simulator_admin_key=None) as sim,
        httpx.AsyncClient(base_url=sim.http_url) as client,
    ):
        off = await client.get("/admin/stats", headers={"X-Admin-Key": "anything"})
    assert off.status_code == 404


async def test_stats_show_connections_and_subscriptions(simulator: SimulatorHandle) -> None:
    assert (await simulator.stats())["connections"] == []
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [NIFTY], "full")
        await live_with(ws, NIFTY)
        stats = await simulator.stats()
        (conn,) = stats["connections"]
        assert conn["user_id"] == "DEMO01"
        assert conn["subscriptions"] == {NIFTY: "full"}
        assert conn["frames_sent"] >= 3 and stats["frames_sent"] >= 3


async def test_drop_connections(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await next_frame(ws)
        assert await simulator.drop_connections() == 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await next_frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    # a fresh authorize works straight away
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        assert (await next_frame(ws)).type == pb.market_info


async def test_expire_tokens_closes_feeds_and_rejects_the_tokens(
    simulator: SimulatorHandle,
) -> None:
    login = await simulator.login(user_id="DEMO02")
    token = login["access_token"]
    async with websockets.connect(await authorized_url(simulator, token)) as ws:
        await next_frame(ws)
        assert await simulator.expire_tokens(include_demo=False) >= 2
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await next_frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert_error(await get(simulator, "/v2/user/profile", token), 401, "UDAPI100050")
    assert_error(
        await get(simulator, "/v3/feed/market-data-feed/authorize", token), 401, "UDAPI100050"
    )
    assert (await get(simulator, "/v2/user/profile", simulator.demo_token)).status_code == 200
    await simulator.expire_tokens()
    assert_error(await get(simulator, "/v2/user/profile", simulator.demo_token), 401, "UDAPI100050")
    fresh = (await simulator.login())["access_token"]  # logging in again is the way back
    assert (await get(simulator, "/v2/user/profile", fresh)).status_code == 200


async def test_an_unused_feed_url_dies_with_its_token(simulator: SimulatorHandle) -> None:
    url = await authorized_url(simulator, simulator.demo_token)
    await simulator.expire_tokens()
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    assert refused.value.response.status_code == 401


async def test_malformed_frame_then_the_feed_goes_on(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [NIFTY])
        await live_with(ws, NIFTY)
        assert await simulator.send_malformed() == 1
        for _ in range(10_000):
            raw = await asyncio.wait_for(ws.recv(), timeout=10)
            assert isinstance(raw, bytes)
            try:
                pb.FeedResponse().ParseFromString(raw)
            except DecodeError:
                break
        else:
            raise AssertionError("the malformed frame never came")
        assert NIFTY in (await live_with(ws, NIFTY)).feeds


async def settled_frames_sent(sim: SimulatorHandle) -> int:
    """frames_sent once the outbox is empty and the count stops moving."""
    previous = -1
    for _ in range(200):
        (conn,) = (await sim.stats())["connections"]
        if conn["queued"] == 0 and conn["frames_sent"] == previous:
            return previous
        previous = conn["frames_sent"] if conn["queued"] == 0 else -1
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox never settled")


async def test_stall_and_tick_interval(simulator: SimulatorHandle) -> None:
    await simulator.set_tick_interval(5)
    assert (await simulator.stats())["tick_interval_ms"] == 5
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [NIFTY])
        await live_with(ws, NIFTY)
        await simulator.stall(3600, scope="all")
        assert (await simulator.stats())["stalled"] is True
        sent = await settled_frames_sent(simulator)
        # requests are still taken in during a stall, but nothing is sent
        await send(ws, "sub", ["NSE_INDEX|Nifty Bank"])
        await asyncio.sleep(0.3)
        assert (await simulator.stats())["connections"][0]["frames_sent"] == sent
        await simulator.stall(0)
        snapshot = await frame_of_type(ws, pb.initial_feed)
        assert "NSE_INDEX|Nifty Bank" in snapshot.feeds
        assert (await simulator.stats())["stalled"] is False
