"""The V3 feed over real sockets with a plain `websockets` client and the generated module."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from services.simulator.universe import universe
from shared.instruments import SEGMENTS
from shared.proto import pb
from tests.simulator.helpers import (
    at_the_money_call,
    authorized_url,
    barrier,
    frame_of_type,
    live_with,
    next_frame,
    send,
)
from tests.support.simulator import SimulatorHandle, running_simulator

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"
RELIANCE = "NSE_EQ|INE002A01018"
TCS = "NSE_EQ|INE467B01029"
INFY = "NSE_EQ|INE009A01021"
OPTION = at_the_money_call().instrument_key


async def test_market_info_first_then_snapshot_then_live(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        first = await next_frame(ws)
        assert first.type == pb.market_info
        assert set(first.marketInfo.segmentStatus) == set(SEGMENTS)
        assert set(first.marketInfo.segmentStatus.values()) == {pb.NORMAL_OPEN}
        await send(ws, "sub", [NIFTY, RELIANCE])  # no mode: ltpc
        snapshot = await next_frame(ws)
        assert snapshot.type == pb.initial_feed
        assert set(snapshot.feeds) == {NIFTY, RELIANCE}
        live = await next_frame(ws)
        assert live.type == pb.live_feed
        assert set(live.feeds) == {NIFTY, RELIANCE}
        assert live.currentTs >= snapshot.currentTs > 0
        for feed in live.feeds.values():
            assert feed.WhichOneof("FeedUnion") == "ltpc"
            assert feed.requestMode == pb.ltpc
            assert feed.ltpc.ltp > 0 and feed.ltpc.cp > 0 and feed.ltpc.ltt > 0
        assert live.feeds[RELIANCE].ltpc.ltq > 0


async def test_each_mode_gets_its_shape() -> None:
    # Whole live ticks: with partial ticks on, a part that did not change would be left out.
    async with (
        running_simulator(simulator_partial_ticks=False) as simulator,
        websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws,
    ):
        await frame_of_type(ws, pb.market_info)
        await send(ws, "sub", [OPTION], "option_greeks")
        await send(ws, "sub", [RELIANCE, NIFTY], "full")
        await send(ws, "sub", [TCS], "full_d30")
        await barrier(ws, INFY)
        frame = await live_with(ws, TCS)
        assert {OPTION, RELIANCE, NIFTY, TCS, INFY} <= set(frame.feeds)

        greeks = frame.feeds[OPTION]
        assert greeks.WhichOneof("FeedUnion") == "firstLevelWithGreeks"
        assert greeks.requestMode == pb.option_greeks
        first = greeks.firstLevelWithGreeks
        assert first.optionGreeks.delta > 0 and first.optionGreeks.vega > 0
        assert first.iv > 0 and first.oi > 0 and first.vtt > 0
        assert 0 < first.firstDepth.bidP < first.firstDepth.askP

        equity = frame.feeds[RELIANCE]
        assert equity.requestMode == pb.full_d5
        market = equity.fullFeed.marketFF
        quotes = market.marketLevel.bidAskQuote
        assert len(quotes) == 5
        assert all(quote.bidP < quote.askP for quote in quotes)
        assert quotes[0].bidP > quotes[-1].bidP and quotes[0].askP < quotes[-1].askP
        assert market.vtt > 0 and market.atp > 0 and market.tbq > 0 and market.tsq > 0
        candles = {ohlc.interval: ohlc for ohlc in market.marketOHLC.ohlc}
        assert set(candles) == {"1d", "I1"}
        day = candles["1d"]
        assert day.low <= market.ltpc.ltp <= day.high and day.close == market.ltpc.ltp
        assert day.vol == market.vtt

        index = frame.feeds[NIFTY]
        assert index.fullFeed.WhichOneof("FullFeedUnion") == "indexFF"
        assert index.requestMode == pb.full_d5
        assert {ohlc.interval for ohlc in index.fullFeed.indexFF.marketOHLC.ohlc} == {"1d", "I1"}

        deep = frame.feeds[TCS]
        assert deep.requestMode == pb.full_d30
        assert len(deep.fullFeed.marketFF.marketLevel.bidAskQuote) == 30

        assert frame.feeds[INFY].WhichOneof("FeedUnion") == "ltpc"


async def test_options_in_full_mode_carry_greeks_oi_and_iv(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [OPTION], "full")
        snapshot = await frame_of_type(ws, pb.initial_feed)
        market = snapshot.feeds[OPTION].fullFeed.marketFF
        assert market.optionGreeks.gamma > 0 and market.optionGreeks.theta < 0
        assert market.oi > 0 and market.iv > 0


async def test_vtt_is_cumulative(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [RELIANCE], "full")
        volumes = []
        for _ in range(5):
            frame = await live_with(ws, RELIANCE)
            volumes.append(frame.feeds[RELIANCE].fullFeed.marketFF.vtt)
        assert volumes == sorted(volumes)


async def test_unsub_stops_data_and_change_mode_changes_shape(
    simulator: SimulatorHandle,
) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [NIFTY, RELIANCE, BANK])
        await live_with(ws, RELIANCE)
        await send(ws, "unsub", [RELIANCE])
        await send(ws, "change_mode", [BANK], "full")
        await barrier(ws, TCS)
        for _ in range(5):
            frame = await live_with(ws, NIFTY)
            assert RELIANCE not in frame.feeds
            assert frame.feeds[BANK].fullFeed.WhichOneof("FullFeedUnion") == "indexFF"
            assert frame.feeds[NIFTY].WhichOneof("FeedUnion") == "ltpc"


async def test_malformed_requests_are_ignored_and_the_connection_kept(
    simulator: SimulatorHandle,
) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await frame_of_type(ws, pb.market_info)
        await ws.send(b"\x00\x01 not json")
        await ws.send(b'{"guid": "g", "method": "explode", "data": {}}')
        await ws.send('{"guid": "g", "method": "sub", "data": {"instrumentKeys": ["bad"]}}')
        await send(ws, "sub", [RELIANCE])
        snapshot = await frame_of_type(ws, pb.initial_feed)
        assert list(snapshot.feeds) == [RELIANCE]
        (conn,) = (await simulator.stats())["connections"]
        assert conn["bad_requests"] == 3 and conn["requests"] == 4


async def test_keys_past_the_limits_silently_get_no_data() -> None:
    async with (
        running_simulator(
            simulator_limit_ltpc=2, simulator_combined_limit_ltpc=1, simulator_combined_limit_full=1
        ) as sim,
        websockets.connect(await authorized_url(sim, sim.demo_token)) as ws,
    ):
        await send(ws, "sub", [NIFTY, RELIANCE, TCS])
        snapshot = await frame_of_type(ws, pb.initial_feed)
        assert set(snapshot.feeds) == {NIFTY, RELIANCE}
        for _ in range(3):
            assert set((await frame_of_type(ws, pb.live_feed)).feeds) == {NIFTY, RELIANCE}
        (conn,) = (await sim.stats())["connections"]
        assert conn["refused"] == {TCS: "ltpc"} and conn["active"] == 2
        # a second mode brings the combined limits: one ltpc key, one full key
        await send(ws, "sub", [BANK, INFY], "full")
        snapshot = await frame_of_type(ws, pb.initial_feed)
        assert set(snapshot.feeds) == {BANK}
        live = await live_with(ws, BANK)
        assert set(live.feeds) == {NIFTY, BANK}


async def test_feed_url_is_single_use(simulator: SimulatorHandle) -> None:
    url = await authorized_url(simulator, simulator.demo_token)
    async with websockets.connect(url) as ws:
        await next_frame(ws)
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        async with websockets.connect(url):
            pass


async def test_bearer_handshake_is_redirected_and_bad_tokens_get_401(
    simulator: SimulatorHandle,
) -> None:
    headers = {"Authorization": f"Bearer {simulator.demo_token}"}
    async with websockets.connect(simulator.feed_url, additional_headers=headers) as ws:
        assert (await next_frame(ws)).type == pb.market_info
    for bad in ({"Authorization": "Bearer not-a-token"}, {}):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(simulator.feed_url, additional_headers=bad):
                pass
        assert refused.value.response.status_code == 401
    async with httpx.AsyncClient(base_url=simulator.http_url) as client:
        redirect = await client.get("/v3/feed/market-data-feed", headers=headers)
        unauthorized = await client.get("/v3/feed/market-data-feed")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(simulator.ws_url + "/") and "code=" in location
    assert unauthorized.status_code == 401
    assert unauthorized.json()["errors"][0]["error_code"] == "UDAPI100050"


async def test_authorize_url_follows_the_public_url_setting() -> None:
    async with running_simulator(simulator_public_url="https://sim.example:9443") as sim:
        url = await authorized_url(sim, sim.demo_token)
    assert url.startswith("wss://sim.example:9443/market-data-feeder/v3/")


async def test_connections_per_user_are_limited() -> None:
    async with running_simulator(simulator_max_connections_per_user=1) as sim:
        async with websockets.connect(await authorized_url(sim, sim.demo_token)) as ws:
            await next_frame(ws)
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(await authorized_url(sim, sim.demo_token)):
                    pass
            assert refused.value.response.status_code == 403
            other = (await sim.login(user_id="DEMO02"))["access_token"]
            async with websockets.connect(await authorized_url(sim, other)) as second:
                assert (await next_frame(second)).type == pb.market_info
        # the slot is free again once the first connection is gone
        async with websockets.connect(await authorized_url(sim, sim.demo_token)) as ws:
            assert (await next_frame(ws)).type == pb.market_info


async def test_live_frames_are_shared_across_connections(simulator: SimulatorHandle) -> None:
    other = (await simulator.login(user_id="DEMO02"))["access_token"]
    async with (
        websockets.connect(await authorized_url(simulator, simulator.demo_token)) as a,
        websockets.connect(await authorized_url(simulator, other)) as b,
    ):
        await send(a, "sub", [NIFTY], "full")
        await send(b, "sub", [NIFTY], "full")
        await frame_of_type(a, pb.initial_feed)
        await frame_of_type(b, pb.initial_feed)
        seen_a = {(await live_with(a, NIFTY)).currentTs for _ in range(5)}
        seen_b = {(await live_with(b, NIFTY)).currentTs for _ in range(5)}
        assert seen_a & seen_b  # the same ticks reach both


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(length)


async def test_server_pings_an_idle_connection() -> None:
    """Read the raw socket (a WebSocket library answers pings out of sight): after market_info
    an idle, unsubscribed connection gets ping frames."""
    async with running_simulator(server_options={"ws_ping_interval": 0.2}) as sim:
        url = httpx.URL(await authorized_url(sim, sim.demo_token))
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            assert status.startswith(b"HTTP/1.1 101")
            opcode, payload = await asyncio.wait_for(read_ws_frame(reader), timeout=10)
            assert opcode == 0x2
            first = pb.FeedResponse()
            first.ParseFromString(payload)
            assert first.type == pb.market_info
            opcode, _ = await asyncio.wait_for(read_ws_frame(reader), timeout=10)
            assert opcode == 0x9  # ping
        finally:
            writer.close()
            await writer.wait_closed()


async def test_big_subscriptions_come_in_several_frames() -> None:
    keys = [i.instrument_key for i in universe()][:1_200]
    # a slow tick: a client that stops reading stalls its own close handshake behind queued
    # frames (websockets' max_queue), which a 20 ms tick of 1200 keys fills at once
    async with (
        running_simulator(simulator_tick_interval_ms=300) as sim,
        websockets.connect(await authorized_url(sim, sim.demo_token)) as ws,
    ):
        await send(ws, "sub", keys)
        sizes = [len((await frame_of_type(ws, pb.initial_feed)).feeds) for _ in range(3)]
        assert sizes == [500, 500, 200]
        seen: set[str] = set()
        while len(seen) < len(keys):
            frame = await frame_of_type(ws, pb.live_feed)
            assert len(frame.feeds) <= 500
            seen.update(frame.feeds)
        assert seen == set(keys)


async def test_one_time_codes_stay_out_of_the_logs(
    simulator: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = await authorized_url(simulator, simulator.demo_token)
    code = httpx.URL(url).params["code"]
    async with websockets.connect(url) as ws:
        await next_frame(ws)
    headers = {"Authorization": f"Bearer {simulator.demo_token}"}
    async with websockets.connect(simulator.feed_url, additional_headers=headers) as ws:
        await next_frame(ws)
    messages = [record.getMessage() for record in caplog.records]
    assert any("market-data-feeder" in message for message in messages)  # it was logged...
    assert not any(code in message or "code=" in message for message in messages)  # ...bare
    assert not any(simulator.demo_token in message for message in messages)
