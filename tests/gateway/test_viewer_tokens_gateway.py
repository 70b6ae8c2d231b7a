"""Viewer access on a real gateway (port 0, real Redis, real WebSocket and HTTP clients): the
handshake with and without a token, the token's key claim, the close at `exp`, the connection
caps and the client address behind proxies, the HTTP guard and the sign-in page."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Request
from websockets.exceptions import ConnectionClosed

from services.gateway.protocol import CLOSE_TOKEN_EXPIRED, CLOSE_TRY_AGAIN_LATER
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    RELIANCE,
    Client,
    GatewayHandle,
    StartGateway,
    client,
    eventually,
)
from tests.support.tokens import claims, identity_provider, rsa_key, unsigned

SECRET = "g" * 40
TOKEN_MODE: dict[str, Any] = {"gateway_viewer_access": "token", "gateway_token_secret": SECRET}


def token(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET.encode(), algorithm="HS256")


async def closed_with(c: Client) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; its code, reason and the frames before."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await c.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason, c.frames


async def refusal(url: str, **options: Any) -> str:
    async with client(url, **options) as c:
        code, reason, frames = await closed_with(c)
    assert (code, reason) == (1008, "unauthorized")
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unauthorized"
    message: str = frames[-1]["message"]
    assert "eyJ" not in message
    return message


async def test_the_handshake_needs_a_valid_token(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE, gateway_token_audience="tickstream")
    url = gateway.ws_url
    assert "required" in await refusal(url)
    assert "expired" in await refusal(f"{url}?token={token(aud='tickstream', exp=1)}")
    forged = jwt.encode(claims(aud="tickstream"), ("x" * 40).encode(), algorithm="HS256")
    assert "signature" in await refusal(f"{url}?token={forged}")
    assert "audience" in await refusal(f"{url}?token={token(aud='someone-else')}")
    bare = unsigned(claims(aud="tickstream"))
    assert "algorithm" in await refusal(f"{url}?token={bare}")
    assert gateway.hub.stats.rejected["unauthorized"] == 5
    assert not gateway.hub.clients


async def test_a_token_in_a_header_the_query_or_the_cookie(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE, gateway_api_keys=["an-api-key"])
    good = token()
    for options in (
        {"additional_headers": {"Authorization": f"Bearer {good}"}},
        {"additional_headers": {"Cookie": f"other=1; tickstream_viewer={good}"}},
        {"additional_headers": {"Authorization": "Bearer an-api-key"}},
    ):
        async with client(gateway.ws_url, **options) as c:
            assert (await c.expect("status"))["type"] == "status"
    async with client(f"{gateway.ws_url}?token={good}") as c:
        await c.expect("status")
    async with client(f"{gateway.ws_url}?api_key=an-api-key") as c:
        await c.expect("status")


async def test_keys_outside_the_tokens_claim_are_forbidden(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE)
    limited = token(keys=["NSE_INDEX|*"])
    async with client(f"{gateway.ws_url}?token={limited}") as c:
        await c.expect("status")
        await c.send({"op": "subscribe", "keys": [NIFTY, RELIANCE, BANK], "id": "s1"})
        error = await c.expect("error", id="s1")
        assert error["code"] == "forbidden_key" and error["keys"] == [RELIANCE]
        ack = await c.expect("ack", id="s1")
        assert ack["keys"] == [NIFTY, BANK]
        await c.send({"op": "subscribe", "keys": [RELIANCE], "id": "s2"})
        error = await c.expect("error", id="s2")
        assert error["code"] == "forbidden_key" and error["keys"] == [RELIANCE]
        await c.send({"op": "ping", "id": "p"})
        await c.expect("pong", id="p")
    assert not [f for f in c.frames if f["type"] == "ack" and f.get("id") == "s2"]


async def test_the_connection_closes_when_its_token_expires(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE)
    short = jwt.encode(
        {"sub": "brief", "exp": int(time.time()) + 2}, SECRET.encode(), algorithm="HS256"
    )
    lasting = token()
    async with (
        client(f"{gateway.ws_url}?token={short}") as c,
        client(f"{gateway.ws_url}?token={lasting}") as other,
    ):
        await c.expect("status")
        await other.expect("status")
        code, reason, frames = await closed_with(c)
        assert (code, reason) == (CLOSE_TOKEN_EXPIRED, "token expired")
        assert frames[-1]["code"] == "token_expired"
        await other.send({"op": "ping", "id": "still"})
        await other.expect("pong", id="still")


async def test_connections_per_address_are_capped(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway_max_connections_per_address=2)

    def from_(address: str) -> dict[str, Any]:
        return {"additional_headers": {"X-Forwarded-For": address}}

    async with (
        client(gateway.ws_url, **from_("203.0.113.1")) as a1,
        client(gateway.ws_url, **from_("203.0.113.1")) as a2,
    ):
        await a1.expect("status")
        await a2.expect("status")
        async with client(gateway.ws_url, **from_("203.0.113.1")) as a3:
            code, reason, frames = await closed_with(a3)
        assert (code, reason) == (CLOSE_TRY_AGAIN_LATER, "try again later")
        assert frames[-1]["code"] == "too_many_connections"
        async with client(gateway.ws_url, **from_("203.0.113.2")) as b1:
            await b1.expect("status")  # another client behind the same (trusted) proxy
    assert gateway.hub.stats.rejected["connections_per_address"] == 1
    await eventually(lambda: not gateway.hub.clients, "the connections to be released")
    async with client(gateway.ws_url, **from_("203.0.113.1")) as again:
        await again.expect("status")


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        gateway_max_connections_per_address=1, trusted_proxies=["192.0.2.1"]
    )
    async with client(gateway.ws_url) as first:
        await first.expect("status")
        spoofed = {"additional_headers": {"X-Forwarded-For": "198.51.100.7"}}
        async with client(gateway.ws_url, **spoofed) as second:
            code, _, _ = await closed_with(second)
    assert code == CLOSE_TRY_AGAIN_LATER


async def test_connections_per_replica_are_capped(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway_max_connections=2, gateway_max_connections_per_address=0)
    async with client(gateway.ws_url) as c1, client(gateway.ws_url) as c2:
        await c1.expect("status")
        await c2.expect("status")
        async with client(gateway.ws_url) as c3:
            code, _, frames = await closed_with(c3)
        assert code == CLOSE_TRY_AGAIN_LATER and frames[-1]["code"] == "too_many_connections"
    assert gateway.hub.stats.rejected["connections"] == 1


async def test_a_token_of_the_identity_provider_over_the_websocket(
    start_gateway: StartGateway,
) -> None:
    """The key set is fetched while the handshake waits; the subscribe right after works."""
    async with identity_provider() as provider:
        private, public = rsa_key("r1")
        provider.keys = [public]
        gateway = await start_gateway(
            gateway_viewer_access="token", gateway_token_jwks_url=provider.url
        )
        signed = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "r1"})
        async with client(f"{gateway.ws_url}?token={signed}") as c:
            await c.subscribe([NIFTY])
        assert provider.fetches == 1
        other, _ = rsa_key("r1")
        forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "r1"})
        assert "signature" in await refusal(f"{gateway.ws_url}?token={forged}")


# ---- HTTP --------------------------------------------------------------------------------


def http(gateway: GatewayHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.http_url, timeout=15)


async def test_the_api_and_the_page_need_a_credential(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE)
    good = token(keys=[NIFTY])
    async with http(gateway) as web:
        refused = await web.get("/api/status")
        assert refused.status_code == 401 and refused.json()["reason"] == "missing"
        assert refused.headers["www-authenticate"] == "Bearer"
        expired = await web.get("/api/status", params={"token": token(exp=1)})
        assert expired.status_code == 401 and expired.json()["reason"] == "expired"
        ok = await web.get("/api/status", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200
        forbidden = await web.get(f"/api/history/{RELIANCE}", params={"token": good})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden_key"
        page = await web.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2F"
        stale = await web.get("/", headers={"Cookie": f"tickstream_viewer={token(exp=1)}"})
        assert stale.headers["location"] == "/signin?next=%2F&why=expired"
        signed_in = await web.get("/", headers={"Cookie": f"tickstream_viewer={good}"})
        assert signed_in.status_code == 200
        for open_path in ("/healthz", "/static/styles.css", "/signin"):
            assert (await web.get(open_path)).status_code == 200, open_path


async def test_open_mode_asks_nothing(gateway: GatewayHandle) -> None:
    async with http(gateway) as web:
        assert (await web.get("/api/status")).status_code == 200
        assert (await web.get("/")).status_code == 200


async def test_sign_in_sets_a_strict_http_only_cookie(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE)
    own = gateway.http_url
    good = token()
    async with http(gateway) as web:
        page = await web.get("/signin", params={"next": "/?watch=1"})
        assert page.status_code == 200 and 'value="/?watch=1"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        answer = await web.post(
            "/signin", data={"token": good, "next": "/?watch=1"}, headers={"Origin": own}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/?watch=1"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"tickstream_viewer={good};")
        for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age="):
            assert flag.lower() in cookie.lower(), flag
        assert "secure" not in cookie.lower()
        behind_tls = await web.post(
            "/signin",
            data={"token": good},
            headers={
                "Origin": "https://dash.example",
                "Host": "dash.example",
                "X-Forwarded-Proto": "https",
            },
        )
        assert behind_tls.headers["location"] == "/"
        assert "secure" in behind_tls.headers["set-cookie"].lower()
        away = await web.post(
            "/signin", data={"token": good, "next": "//evil.example/"}, headers={"Origin": own}
        )
        assert away.headers["location"] == "/"
        out = await web.post("/signout", headers={"Origin": own})
        assert out.status_code == 303 and 'tickstream_viewer=""' in out.headers["set-cookie"]


async def test_sign_in_refuses_other_sites_and_bad_tokens(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(**TOKEN_MODE)
    good = token()
    async with http(gateway) as web:
        for origin in ("https://evil.example", "null", None):
            headers = {} if origin is None else {"Origin": origin}
            answer = await web.post("/signin", data={"token": good}, headers=headers)
            assert answer.status_code == 403, origin
            assert "set-cookie" not in answer.headers
        expired = token(exp=1)
        answer = await web.post(
            "/signin", data={"token": expired}, headers={"Origin": gateway.http_url}
        )
        assert answer.status_code == 401 and "set-cookie" not in answer.headers
        assert "the token has expired" in answer.text and expired not in answer.text
        forged = jwt.encode(claims(), ("x" * 40).encode(), algorithm="HS256")
        answer = await web.post(
            "/signin", data={"token": forged}, headers={"Origin": gateway.http_url}
        )
        assert "signature is not valid" in answer.text and forged not in answer.text


async def test_the_request_state_names_the_viewer(start_gateway: StartGateway) -> None:
    """What per-viewer limits count under (/api/history's): the token's `sub`, one name per API
    key (never the key), and no viewer at all in open mode (then the client's address)."""

    async def whoami(request: Request) -> dict[str, str | None]:
        return {"viewer": getattr(getattr(request.state, "viewer", None), "sub", None)}

    open_gateway = await start_gateway()
    keyed = await start_gateway(**TOKEN_MODE, gateway_api_keys=["key-one", "key-two"])
    for handle in (open_gateway, keyed):
        handle.app.router.add_api_route("/api/whoami", whoami)
    async with http(open_gateway) as web:
        assert (await web.get("/api/whoami")).json() == {"viewer": None}
    async with http(keyed) as web:
        named = await web.get("/api/whoami", params={"token": token(sub="desk-3")})
        assert named.json() == {"viewer": "desk-3"}
        one = (await web.get("/api/whoami", params={"api_key": "key-one"})).json()["viewer"]
        two = (await web.get("/api/whoami", params={"api_key": "key-two"})).json()["viewer"]
        assert one != two and "key-one" not in one and "key-two" not in two
