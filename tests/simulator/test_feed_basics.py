"""The V3 feed over real sockets, as an Upstox client sees it."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from shared.instruments import SEGMENTS
from shared.proto import pb
from tests.support.simulator import SimulatorHandle

NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"


async def authorized_url(sim: SimulatorHandle, token: str) -> str:
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as client:
        response = await client.get(
            "/v3/feed/market-data-feed/authorize",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    url: str = body["data"]["authorized_redirect_uri"]
    assert body["data"]["authorizedRedirectUri"] == url
    return url


async def next_frame(ws: ClientConnection) -> pb.FeedResponse:
    raw = await asyncio.wait_for(ws.recv(), timeout=10)
    assert isinstance(raw, bytes)
    frame = pb.FeedResponse()
    frame.ParseFromString(raw)
    return frame


async def subscribe(ws: ClientConnection, keys: list[str], mode: str | None = None) -> None:
    data: dict[str, object] = {"instrumentKeys": keys}
    if mode is not None:
        data["mode"] = mode
    await ws.send(orjson.dumps({"guid": "g1", "method": "sub", "data": data}))


async def test_market_info_first_then_snapshot_then_live(simulator: SimulatorHandle) -> None:
    url = await authorized_url(simulator, simulator.demo_token)
    async with websockets.connect(url) as ws:
        first = await next_frame(ws)
        assert first.type == pb.market_info
        assert set(first.marketInfo.segmentStatus) == set(SEGMENTS)
        await subscribe(ws, [NIFTY, RELIANCE])
        snapshot = await next_frame(ws)
        assert snapshot.type == pb.initial_feed
        assert set(snapshot.feeds) == {NIFTY, RELIANCE}
        live = await next_frame(ws)
        assert live.type == pb.live_feed
        assert set(live.feeds) == {NIFTY, RELIANCE}
        for feed in live.feeds.values():
            assert feed.WhichOneof("FeedUnion") == "ltpc"
            assert feed.requestMode == pb.ltpc
            assert feed.ltpc.ltp > 0


async def test_bearer_handshake_is_redirected_to_a_one_time_url(
    simulator: SimulatorHandle,
) -> None:
    headers = {"Authorization": f"Bearer {simulator.demo_token}"}
    async with websockets.connect(simulator.feed_url, additional_headers=headers) as ws:
        assert (await next_frame(ws)).type == pb.market_info
