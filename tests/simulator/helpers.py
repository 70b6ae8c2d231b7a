"""Small helpers shared by the simulator's socket tests."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection

from services.simulator.universe import Instrument, universe
from shared.proto import pb
from tests.support.simulator import SimulatorHandle


def at_the_money_call(today: dt.date | None = None) -> Instrument:
    """The nearest expiry's call struck closest to its underlying's price: an option whose
    greeks are all well away from their limits (deep strikes have vega ~0, delta ~1)."""
    calls = [i for i in universe(today) if i.instrument_type == "CE"]
    return min(calls, key=lambda i: (i.expiry, abs((i.strike_price or 0) - i.base_price)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """Upstox's envelope, with the snake_case keys and their camelCase twins."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    (error,) = body["errors"]
    assert error["error_code"] == error["errorCode"] == code
    assert error["message"]
    for snake, camel in (("property_path", "propertyPath"), ("invalid_value", "invalidValue")):
        assert snake in error and camel in error and error[snake] == error[camel]


async def get(sim: SimulatorHandle, path: str, token: str | None = None) -> httpx.Response:
    headers = bearer(token) if token else {"Accept": "application/json"}
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=30) as client:
        return await client.get(path, headers=headers)


async def authorized_url(sim: SimulatorHandle, token: str) -> str:
    response = await get(sim, "/v3/feed/market-data-feed/authorize", token)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    url: str = data["authorized_redirect_uri"]
    assert data["authorizedRedirectUri"] == url
    return url


async def next_frame(ws: ClientConnection, within: float = 10.0) -> pb.FeedResponse:
    raw = await asyncio.wait_for(ws.recv(), timeout=within)
    assert isinstance(raw, bytes)
    frame = pb.FeedResponse()
    frame.ParseFromString(raw)
    return frame


async def send(ws: ClientConnection, method: str, keys: list[str], mode: str | None = None) -> None:
    data: dict[str, Any] = {"instrumentKeys": keys}
    if mode is not None:
        data["mode"] = mode
    await ws.send(orjson.dumps({"guid": f"guid-{method}", "method": method, "data": data}))


async def frame_of_type(ws: ClientConnection, kind: int) -> pb.FeedResponse:
    """The next frame of `kind`, skipping others (live frames keep coming meanwhile)."""
    for _ in range(10_000):
        frame = await next_frame(ws)
        if frame.type == kind:
            return frame
    raise AssertionError("no frame of the wanted type")


async def live_with(ws: ClientConnection, key: str) -> pb.FeedResponse:
    """The next live frame carrying `key`."""
    for _ in range(10_000):
        frame = await next_frame(ws)
        if frame.type == pb.live_feed and key in frame.feeds:
            return frame
    raise AssertionError(f"no live frame with {key}")


async def barrier(ws: ClientConnection, marker: str) -> None:
    """Subscribe `marker` and wait for its snapshot: every request sent before it has been
    applied, and every frame read afterwards was built after them (the outbox is in order)."""
    await send(ws, "sub", [marker])
    for _ in range(10_000):
        frame = await next_frame(ws)
        if frame.type == pb.initial_feed and marker in frame.feeds:
            return
    raise AssertionError("marker snapshot never came")
