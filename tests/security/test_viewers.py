"""Viewer access through the front of the running system (`tickstream dev`'s processes) started
with GATEWAY_VIEWER_ACCESS=token: before it, anyone who reached the front watched the operator's
feed, called /api/* (spending the operator's Upstox quota) and held as many sockets as they
liked. Every viewer surface now needs a valid token; forged, expired, unsigned and foreign
tokens are refused and say why; sign-in refuses other sites; one client address cannot open
more than its share of connections.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.stack import Stack, running_stack
from tests.support.tokens import unsigned

SECRET = "viewers-through-the-front-" + "7" * 16
AUDIENCE = "tickstream-test"
NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
PER_ADDRESS = 3


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    overrides = {
        "GATEWAY_VIEWER_ACCESS": "token",
        "GATEWAY_TOKEN_SECRET": SECRET,
        "GATEWAY_TOKEN_AUDIENCE": AUDIENCE,
        "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    }
    with running_stack(gateways=1, overrides=overrides) as running:
        yield running


def token(secret: str = SECRET, **claims: Any) -> str:
    payload = {"sub": "viewer", "exp": int(time.time()) + 600, "aud": AUDIENCE, **claims}
    return jwt.encode(payload, secret.encode(), algorithm="HS256")


# Made at collection, maybe long before a test reads them: only "expired" may expire.
BAD_TOKENS = {
    "expired": token(exp=int(time.time()) - 60),
    "bad_signature": token(secret="someone-elses-secret-" + "x" * 16, exp=4_000_000_000),
    "wrong_audience": token(aud="another-app", exp=4_000_000_000),
    "unsupported_algorithm": unsigned({"sub": "viewer", "exp": 4_000_000_000, "aud": AUDIENCE}),
    "malformed": "let-me-in",
}


@pytest.fixture
async def web(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.front_url, trust_env=False, timeout=15) as client:
        yield client


async def test_the_api_needs_a_valid_token(web: httpx.AsyncClient) -> None:
    for path in ("/api/status", "/api/instruments?q=nifty", f"/api/history/{NIFTY}"):
        refused = await web.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["reason"] == "missing"
    for reason, bad in BAD_TOKENS.items():
        refused = await web.get("/api/status", headers={"Authorization": f"Bearer {bad}"})
        assert (refused.status_code, refused.json()["reason"]) == (401, reason)
        assert bad not in refused.text
    allowed = await web.get("/api/status", params={"token": token()})
    assert allowed.status_code == 200 and allowed.json()["replica"]
    limited = token(keys=[NIFTY])
    outside = await web.get(f"/api/history/{RELIANCE}", params={"token": limited})
    assert outside.status_code == 403 and outside.json()["error"] == "forbidden_key"


async def test_the_page_sends_a_viewer_to_sign_in(web: httpx.AsyncClient) -> None:
    page = await web.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2F"
    stale = await web.get("/", headers={"Cookie": f"tickstream_viewer={BAD_TOKENS['expired']}"})
    assert stale.headers["location"] == "/signin?next=%2F&why=expired"
    for path in ("/signin", "/static/app.js", "/static/signin.css", "/healthz"):
        assert (await web.get(path)).status_code == 200, path
    signed_in = await web.get("/", headers={"Cookie": f"tickstream_viewer={token()}"})
    assert signed_in.status_code == 200 and "tickstream" in signed_in.text


async def test_sign_in_takes_only_this_sites_form(web: httpx.AsyncClient, stack: Stack) -> None:
    good = token()
    for origin in ("http://evil.example", "null"):
        forged = await web.post("/signin", data={"token": good}, headers={"Origin": origin})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers, origin
    bad = await web.post(
        "/signin", data={"token": BAD_TOKENS["wrong_audience"]}, headers={"Origin": stack.front_url}
    )
    assert bad.status_code == 401 and "another audience" in bad.text
    assert BAD_TOKENS["wrong_audience"] not in bad.text
    ok = await web.post(
        "/signin",
        data={"token": good, "next": "https://evil.example/"},
        headers={"Origin": stack.front_url},
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


async def first_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await ws.recv())
    return frame


async def closed(ws: ClientConnection) -> tuple[int, str, list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed) as ended:
        while True:
            frames.append(orjson.loads(await ws.recv()))
    assert ended.value.rcvd is not None
    return ended.value.rcvd.code, ended.value.rcvd.reason, frames


async def test_the_websocket_needs_a_valid_token(stack: Stack) -> None:
    async with connect(stack.front_ws_url, open_timeout=15) as ws:
        code, reason, frames = await closed(ws)
    assert (code, reason) == (1008, "unauthorized") and "required" in frames[-1]["message"]
    for bad in BAD_TOKENS.values():
        async with connect(f"{stack.front_ws_url}?token={bad}", open_timeout=15) as ws:
            code, _, frames = await closed(ws)
        assert code == 1008 and frames[-1]["code"] == "unauthorized"
    limited = token(keys=["NSE_INDEX|*"])
    async with connect(f"{stack.front_ws_url}?token={limited}", open_timeout=15) as ws:
        assert (await first_frame(ws))["type"] in ("status", "market_info")
        request = {"op": "subscribe", "keys": [NIFTY, RELIANCE], "mode": "ltpc", "id": "s"}
        await ws.send(orjson.dumps(request).decode())
        while (frame := await first_frame(ws)).get("type") != "error":
            pass
        assert frame["code"] == "forbidden_key" and frame["keys"] == [RELIANCE]


async def test_one_address_cannot_hold_every_connection(stack: Stack) -> None:
    """Counted under the address the front saw (its X-Forwarded-For, believed from the front
    only); the gateway-level tests show a header from an untrusted peer is ignored. A client's
    own X-Forwarded-For, different on each connection, changes nothing: the front replaces it
    (appended, the loopback client would have been counted under the address it claimed)."""
    url = f"{stack.front_ws_url}?token={token()}"
    opened: list[ClientConnection] = []
    try:
        for n in range(PER_ADDRESS):
            claimed = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
            ws = await connect(url, open_timeout=15, additional_headers=claimed)
            opened.append(ws)
            assert (await first_frame(ws))["type"] in ("status", "market_info")
        claimed = {"X-Forwarded-For": "198.51.100.99"}
        async with connect(url, open_timeout=15, additional_headers=claimed) as extra:
            code, reason, frames = await closed(extra)
        assert (code, reason) == (1013, "try again later")
        assert frames[-1]["code"] == "too_many_connections"
    finally:
        for ws in opened:
            await ws.close()
