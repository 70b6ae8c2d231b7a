"""Viewer access on the recorder's query API: the recorder's own app (its lifespan on a real
Redis) as a real server on port 0, in token mode and in open mode, asked over HTTP with the
credentials a viewer presents (header, ?token=, the dashboard's sign-in cookie, an API key)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.recorder.app import create_app
from shared.viewer_access import VIEWER_COOKIE
from shared.viewer_tokens import mint
from tests.recorder.conftest import settings_for
from tests.recorder.test_query import KEY, at, tick, write
from tests.support.servers import running_server
from tests.support.tokens import claims, hmac_signed

SECRET = "a-recorder-test-secret-of-32-bytes-or-more"
API_KEY = "a-recorder-api-key"
OTHER_KEY = "NSE_EQ|INE467B01029"
TOKEN_MODE: dict[str, Any] = {
    "gateway_viewer_access": "token",
    "gateway_token_secret": SECRET,
    "gateway_api_keys": [API_KEY],
}
# The recorded day (tests.recorder.test_query's); the routes default to a span ending now.
DAY = {"from": "2026-12-04T00:00:00+05:30", "to": "2026-12-05T00:00:00+05:30"}
TICKS = f"/api/ticks/{KEY}"
CANDLES = f"/api/candles/{KEY}"

Recorder = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def recorder(redis_url: str, tmp_path: Path) -> Recorder:
    """`async with recorder(**settings) as http`: the recorder's app, its queries answered
    from a recording of two ticks of KEY, and a client for it."""
    recorded = tmp_path / "recorded"
    write(recorded, [tick(at(0), 100.0, 0, volume=10), tick(at(1), 101.0, 1, volume=20)])

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings_for(redis_url, tmp_path / "rec", **overrides))
        # Ticks with no frames behind them are what a crash leaves, and the recorder deletes
        # them at start: so its own directory records, and the queries read the written one.
        app.state.recording_root = recorded
        async with (
            running_server(app) as server,
            httpx.AsyncClient(base_url=server.http_url) as http,
        ):
            yield http

    return serve


def token(**extra: Any) -> str:
    return mint(SECRET, "viewer-1", 600, **extra)


async def test_token_mode_without_a_credential_is_401(recorder: Recorder) -> None:
    async with recorder(**TOKEN_MODE) as http:
        for path in (TICKS, CANDLES, "/api/recording/gaps"):
            response = await http.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"
            assert response.json()["reason"] == "missing"
        # Probes and metrics stay open: the kubelet and Prometheus have no token.
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


async def test_a_bad_signature_is_401(recorder: Recorder) -> None:
    forged = hmac_signed(claims(), b"not-the-secret-but-just-as-long-as-it")
    async with recorder(**TOKEN_MODE) as http:
        response = await http.get(TICKS, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    body = response.json()
    assert body["reason"] == "bad_signature"
    assert forged not in response.text  # the credential is never echoed


async def test_a_valid_token_is_accepted_where_a_viewer_puts_it(recorder: Recorder) -> None:
    valid = token()
    async with recorder(**TOKEN_MODE) as http:
        by_header = await http.get(TICKS, params=DAY, headers={"Authorization": f"Bearer {valid}"})
        by_query = await http.get(TICKS, params={**DAY, "token": valid})
        # The dashboard's sign-in cookie (Path=/) on the same origin: its candle calls.
        by_cookie = await http.get(
            CANDLES,
            params={**DAY, "interval": "1m"},
            headers={"Cookie": f"{VIEWER_COOKIE}={valid}"},
        )
    for response in (by_header, by_query):
        assert response.status_code == 200
        assert [t["ltp"] for t in response.json()["ticks"]] == [100.0, 101.0]
    assert by_cookie.status_code == 200
    assert len(by_cookie.json()["candles"]) == 2


async def test_a_key_outside_the_tokens_claim_is_403(recorder: Recorder) -> None:
    limited = {"Authorization": f"Bearer {token(keys=['NSE_INDEX|*', KEY])}"}
    async with recorder(**TOKEN_MODE) as http:
        allowed = await http.get(TICKS, headers=limited)
        for path in (f"/api/ticks/{OTHER_KEY}", f"/api/candles/{OTHER_KEY}"):
            response = await http.get(path, headers=limited)
            assert response.status_code == 403, path
            assert response.json() == {
                "error": "forbidden_key",
                "message": "your token does not allow this key",
                "keys": [OTHER_KEY],
            }
    assert allowed.status_code == 200


async def test_an_api_key_is_accepted(recorder: Recorder) -> None:
    async with recorder(**TOKEN_MODE) as http:
        by_header = await http.get(
            TICKS, params=DAY, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        by_query = await http.get(CANDLES, params={"api_key": API_KEY})
        wrong = await http.get(TICKS, params={"api_key": "not-" + API_KEY})
    assert by_header.status_code == 200 and len(by_header.json()["ticks"]) == 2
    assert by_query.status_code == 200
    assert wrong.status_code == 401


async def test_open_mode_needs_no_credential(recorder: Recorder) -> None:
    async with recorder() as http:
        ticks = await http.get(TICKS, params=DAY)
        other = await http.get(f"/api/ticks/{OTHER_KEY}")
    assert ticks.status_code == 200 and len(ticks.json()["ticks"]) == 2
    assert other.status_code == 200 and other.json()["ticks"] == []
