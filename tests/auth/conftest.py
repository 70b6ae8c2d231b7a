"""Fixtures for the auth, session-store and Upstox-client tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from services.auth.app import create_app
from services.auth.context import AuthContext
from services.auth.operator import mint_code
from services.auth.settings import AuthSettings
from shared.redis_contract import TOKEN_EVENTS, TokenEvent
from shared.settings import load_settings
from tests.support.servers import RunningServer, running_server
from tests.support.simulator import (
    SimulatorHandle,
    login_via_dialog,
    simulator,  # noqa: F401  (a fixture for the tests here)
)


@dataclass
class TokenEvents:
    """A live subscription to the token-event channel."""

    pubsub: aioredis.client.PubSub
    publisher: aioredis.Redis

    async def next(self) -> TokenEvent:
        async with asyncio.timeout(10):
            while True:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    return TokenEvent.model_validate_json(message["data"])

    async def assert_quiet(self) -> None:
        """Nothing was published before now: a marker we publish must be the next event.

        Redis runs commands one at a time, so anything published before the marker arrives
        before it; no waiting for an absence is needed.
        """
        marker = TokenEvent(event="logout", user_id="__marker__")
        await self.publisher.publish(TOKEN_EVENTS, marker.model_dump_json())
        assert await self.next() == marker


@pytest.fixture
def nowhere() -> str:
    """An Upstox URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def listening(client: aioredis.Redis) -> AsyncIterator[TokenEvents]:
    """A subscription to the token events on `client`, in place before this returns."""
    pubsub = client.pubsub()
    await pubsub.subscribe(TOKEN_EVENTS)
    # Wait for the subscription to be in place so no event is published before it.
    async with asyncio.timeout(10):
        while await pubsub.get_message(timeout=1) is None:
            pass
    yield TokenEvents(pubsub, client)
    await pubsub.unsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.fixture
async def token_events(redis_client: aioredis.Redis) -> AsyncIterator[TokenEvents]:
    async with listening(redis_client) as events:
        yield events


# ---- a real auth service ---------------------------------------------------------------------

# Registered with the simulator's demo app; the tests carry the code to auth themselves.
REDIRECT_URI = "http://127.0.0.1:8001/exchange-token"


def auth_settings(redis_url: str, upstox_url: str, **overrides: object) -> AuthSettings:
    """Settings for a test's auth service; everything that matters is explicit, no `.env`."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "upstox_base_url": upstox_url,
        "upstox_timeout_seconds": 10.0,
        "api_key": "tickstream-demo",
        "api_secret": "tickstream-demo-secret",
        "upstox_redirect_uri": REDIRECT_URI,
        "upstox_dialog_base_url": None,
        "upstox_access_token": None,
        "internal_service_key": None,
        "token_encryption_key": None,
        "auth_cors_origins": [],
        "auth_dashboard_url": "/",
        "auth_state_ttl_seconds": 600,
    }
    values.update(overrides)
    return load_settings(AuthSettings, _env_file=None, **values)


@dataclass
class RunningAuth:
    app: FastAPI
    server: RunningServer
    http: httpx.AsyncClient

    @property
    def context(self) -> AuthContext:
        context: AuthContext = self.app.state.auth
        return context

    @property
    def url(self) -> str:
        return self.server.http_url


@contextlib.asynccontextmanager
async def running_auth(
    settings: AuthSettings, *, operator: bool = True
) -> AsyncIterator[RunningAuth]:
    """auth under uvicorn on a free port, and an HTTP client for it (redirects not followed).

    `operator`: the client signs in as the operator first (a one-time code, as the CLI mints
    it) and sends the session's CSRF token with every request; else it is anyone."""
    app = create_app(settings)
    async with (
        running_server(app) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as http,
    ):
        auth = RunningAuth(app, server, http)
        if operator:
            await sign_in_as_operator(auth)
        yield auth


async def sign_in_as_operator(auth: RunningAuth) -> str:
    """Redeem a fresh one-time code with `auth.http`: its cookie jar then holds the operator's
    cookie, and its headers the session's CSRF token (returned)."""
    code = await mint_code(auth.context.redis, 600)
    signed = await auth.http.get(
        "/operator", params={"code": code}, headers={"Accept": "application/json"}
    )
    assert signed.status_code == 200, signed.text
    token: str = signed.json()["csrf_token"]
    auth.http.headers["X-CSRF-Token"] = token
    return token


async def dialog_login(
    auth: RunningAuth,
    upstox: SimulatorHandle,
    *,
    user_id: str | None = None,
    next_url: str | None = None,
    json: bool = True,
) -> httpx.Response:
    """A whole browser login: /authorize, the simulated dialog, and the callback's answer
    (JSON, or the browser's redirect)."""
    accept = {"Accept": "application/json"}
    params = {} if next_url is None else {"next": next_url}
    auth_url = (await auth.http.get("/authorize", params=params, headers=accept)).json()["auth_url"]
    state = parse_qs(urlsplit(auth_url).query)["state"][0]
    code = await login_via_dialog(
        upstox.http_url, upstox.client_id, REDIRECT_URI, state, user_id=user_id
    )
    return await auth.http.get(
        "/exchange-token", params={"code": code, "state": state}, headers=accept if json else {}
    )
