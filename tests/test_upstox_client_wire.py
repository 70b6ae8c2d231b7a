"""The Upstox client over real HTTP against a scripted peer, for what the simulator never does
on purpose (5xx, hangs, malformed bodies, Retry-After): retries, timeouts and error mapping."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.upstox.client import UpstoxClient
from shared.upstox.errors import (
    UpstoxAuthError,
    UpstoxRateLimited,
    UpstoxRequestError,
    UpstoxServerError,
    UpstoxUnavailable,
)
from tests.support.servers import running_server

TOKEN = "wire-test-token-5f3c9a"
HANG = -1  # a reply status meaning: never answer (until the test ends)

PROFILE = {
    "status": "success",
    "data": {"user_id": "AB1234", "user_name": "Asha", "email": "a@example.com", "new": 1},
}


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """Replies in order (the last one repeats) and what was received."""

    replies: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def reply(self, status: int, body: Any = None, **headers: str) -> Script:
        self.replies.append((status, body, headers))
        return self

    def client(self, **options: Any) -> UpstoxClient:
        options.setdefault("backoff_initial", 0.01)
        options.setdefault("backoff_maximum", 0.02)
        return UpstoxClient(self.url, **options)


@pytest.fixture
async def script() -> AsyncIterator[Script]:
    state = Script()

    async def handler(request: Request) -> Response:
        state.seen.append(
            Seen(
                request.method,
                request.scope["raw_path"].decode(),
                dict(request.headers),
                await request.body(),
            )
        )
        index = min(len(state.seen), len(state.replies)) - 1
        status, body, headers = state.replies[index]
        if status == HANG:
            await state.release.wait()
            status, body = 200, PROFILE
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return Response(content, status, headers=headers, media_type="application/json")

    methods = ["GET", "POST", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", handler, methods=methods)])
    async with running_server(app) as server:
        state.url = server.http_url
        try:
            yield state
        finally:
            state.release.set()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errors": [{"errorCode": code, "message": message}]}


async def test_server_errors_are_retried_until_success(script: Script) -> None:
    script.reply(503, "<html>busy</html>").reply(500, error_body("UDAPI0", "x")).reply(200, PROFILE)
    async with script.client(max_retries=3) as upstox:
        profile = await upstox.profile(TOKEN)
    assert profile.user_id == "AB1234" and profile.user_name == "Asha"
    assert len(script.seen) == 3
    assert all(seen.headers["authorization"] == f"Bearer {TOKEN}" for seen in script.seen)
    assert all(seen.headers["accept"] == "application/json" for seen in script.seen)


async def test_retries_are_bounded(script: Script) -> None:
    script.reply(502, error_body("UDAPI500", "gateway down"))
    async with script.client(max_retries=2) as upstox:
        with pytest.raises(UpstoxServerError) as caught:
            await upstox.profile(TOKEN)
    assert caught.value.status == 502 and caught.value.code == "UDAPI500"
    assert len(script.seen) == 3  # the first try and two retries


async def test_rate_limit_keeps_its_code_and_retry_after(script: Script) -> None:
    script.reply(429, error_body("UDAPI10005", "Too Many Request Sent"), **{"Retry-After": "0"})
    async with script.client(max_retries=1) as upstox:
        with pytest.raises(UpstoxRateLimited) as caught:
            await upstox.holidays(TOKEN)
    assert (caught.value.status, caught.value.code) == (429, "UDAPI10005")
    assert caught.value.retry_after == 0
    assert len(script.seen) == 2


async def test_a_refused_token_is_not_retried_and_never_echoed(script: Script) -> None:
    script.reply(401, error_body("UDAPI100050", f"Invalid token {TOKEN} used to access API"))
    async with script.client(max_retries=3) as upstox:
        with pytest.raises(UpstoxAuthError) as caught:
            await upstox.profile(TOKEN)
    assert len(script.seen) == 1
    assert caught.value.code == "UDAPI100050"
    assert TOKEN not in str(caught.value)


async def test_a_bad_request_is_not_retried(script: Script) -> None:
    script.reply(400, error_body("UDAPI1148", "Invalid date range"))
    async with script.client() as upstox:
        with pytest.raises(UpstoxRequestError) as caught:
            await upstox.historical_candles(TOKEN, "NSE_EQ|INE002A01018", "days", 1, "2024-01-01")
    assert caught.value.code == "UDAPI1148"
    assert len(script.seen) == 1


async def test_the_code_exchange_is_not_retried_after_a_server_error(script: Script) -> None:
    script.reply(503, error_body("UDAPI0", "busy"))
    async with script.client(max_retries=3) as upstox:
        with pytest.raises(UpstoxServerError) as caught:
            await upstox.exchange_code("one-time-code", "client", "the-secret", "http://r/cb")
    assert len(script.seen) == 1
    sent = script.seen[0]
    assert sent.method == "POST" and sent.raw_path == "/v2/login/authorization/token"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert b"grant_type=authorization_code" in sent.body and b"code=one-time-code" in sent.body
    assert "one-time-code" not in str(caught.value) and "the-secret" not in str(caught.value)


async def test_a_hung_server_times_out_as_unavailable(script: Script) -> None:
    script.reply(HANG)
    async with script.client(timeout=0.2, max_retries=1) as upstox:
        with pytest.raises(UpstoxUnavailable, match="no answer") as caught:
            await upstox.profile(TOKEN)
    assert caught.value.status is None
    assert len(script.seen) == 2


async def test_nobody_listening_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with UpstoxClient(f"http://127.0.0.1:{port}", max_retries=0) as upstox:
        with pytest.raises(UpstoxUnavailable, match="cannot reach"):
            await upstox.profile(TOKEN)


async def test_a_malformed_answer_is_an_error_that_does_not_quote_the_body(script: Script) -> None:
    # A token response without user_id: pydantic would quote the input, token included.
    script.reply(200, {"access_token": "issued-token-abc", "email": "a@b"})
    async with script.client() as upstox:
        with pytest.raises(UpstoxServerError, match="user_id") as caught:
            await upstox.exchange_code("code", "client", "secret", "http://r/cb")
    assert "issued-token-abc" not in str(caught.value)


async def test_candles_come_back_oldest_first_from_an_encoded_path(script: Script) -> None:
    rows = [
        ["2025-01-03T00:00:00+05:30", 3, 3, 3, 3, 30, 0],
        ["2025-01-01T00:00:00+05:30", 1, 1, 1, 1, 10, 0],
        ["2025-01-02T00:00:00+05:30", 2, 2, 2, 2, 20, 0],
    ]
    script.reply(200, {"status": "success", "data": {"candles": rows}})
    async with script.client() as upstox:
        candles = await upstox.historical_candles(
            TOKEN, "NSE_INDEX|Nifty 50", "days", 1, "2025-01-03", "2025-01-01"
        )
        await upstox.intraday_candles(TOKEN, "NSE_INDEX|Nifty Bank", "minutes", 5)
    assert [candle.volume for candle in candles] == [10, 20, 30]
    assert script.seen[0].raw_path == (
        "/v3/historical-candle/NSE_INDEX%7CNifty%2050/days/1/2025-01-03/2025-01-01"
    )
    assert (
        script.seen[1].raw_path
        == "/v3/historical-candle/intraday/NSE_INDEX%7CNifty%20Bank/minutes/5"
    )


async def test_feed_authorize_reads_the_camel_case_twin(script: Script) -> None:
    script.reply(200, {"status": "success", "data": {"authorizedRedirectUri": "wss://h/feed?c=1"}})
    script.reply(200, {"status": "success", "data": {"authorized_redirect_uri": "https://x"}})
    async with script.client() as upstox:
        assert await upstox.authorize_feed(TOKEN) == "wss://h/feed?c=1"
        with pytest.raises(UpstoxServerError, match="no WebSocket URL") as caught:
            await upstox.authorize_feed(TOKEN)
    assert "https://x" not in str(caught.value)
