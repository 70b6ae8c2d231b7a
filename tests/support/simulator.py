"""The Upstox simulator as a real server for tests, and a browser-like login helper.

    async with running_simulator(simulator_tick_interval_ms=5) as sim:
        sim.http_url, sim.ws_url, sim.demo_token, await sim.drop_connections()

or the `simulator` fixture (a handle with the defaults below) by importing it into a test
module or conftest: `from tests.support.simulator import simulator  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from services.simulator.app import create_app
from services.simulator.settings import SimulatorSettings
from tests.support.servers import RunningServer, running_server

TEST_DEMO_TOKEN = "sim-test-demo-token-0123456789abcdef"
TEST_ADMIN_KEY = "sim-test-admin-key"
TEST_DEFAULTS: dict[str, Any] = {
    "simulator_demo_token": TEST_DEMO_TOKEN,
    "simulator_admin_key": TEST_ADMIN_KEY,
    "simulator_tick_interval_ms": 20.0,
}


@dataclass
class SimulatorHandle:
    """A running simulator: its URLs, settings, demo token and admin API."""

    server: RunningServer
    settings: SimulatorSettings

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def feed_url(self) -> str:
        """The direct (bearer + redirect) feed endpoint."""
        return f"{self.ws_url}/v3/feed/market-data-feed"

    @property
    def demo_token(self) -> str:
        token = self.settings.simulator_demo_token
        if token is None:
            raise RuntimeError("this simulator runs without a demo token")
        return token.get_secret_value()

    @property
    def admin_key(self) -> str:
        key = self.settings.simulator_admin_key
        if key is None:
            raise RuntimeError("this simulator runs without the admin API")
        return key.get_secret_value()

    @property
    def client_id(self) -> str:
        return self.settings.simulator_client_id

    @property
    def client_secret(self) -> str:
        return self.settings.simulator_client_secret.get_secret_value()

    @property
    def redirect_uri(self) -> str:
        return self.settings.simulator_redirect_uris[0]

    async def admin(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=10) as client:
            response = await client.request(
                method, f"/admin/{path}", params=params, headers={"X-Admin-Key": self.admin_key}
            )
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    async def drop_connections(self, code: int = 1011) -> int:
        return int((await self.admin("POST", "drop-connections", code=code))["dropped"])

    async def expire_tokens(self, include_demo: bool = True) -> int:
        data = await self.admin("POST", "expire-tokens", include_demo=str(include_demo).lower())
        return int(data["expired"])

    async def stall(self, seconds: float, scope: str = "current") -> int:
        """No data for `seconds` on the feeds open now (`scope="all"`: on every feed, new ones
        too); returns how many open connections it silenced."""
        return int((await self.admin("POST", "stall", seconds=seconds, scope=scope))["connections"])

    async def send_malformed(self) -> int:
        return int((await self.admin("POST", "malformed"))["connections"])

    async def set_tick_interval(self, ms: float) -> None:
        await self.admin("POST", "tick-interval", ms=ms)

    async def stats(self) -> dict[str, Any]:
        return await self.admin("GET", "stats")

    async def login(self, state: str = "test-state", user_id: str | None = None) -> dict[str, Any]:
        """A full login round trip: the dialog, then the token exchange; the token response."""
        code = await login_via_dialog(
            self.http_url, self.client_id, self.redirect_uri, state, user_id=user_id
        )
        async with httpx.AsyncClient(base_url=self.http_url, timeout=10) as client:
            response = await client.post(
                "/v2/login/authorization/token",
                data={
                    "code": code,
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "redirect_uri": self.redirect_uri,
                    "grant_type": "authorization_code",
                },
                headers={"Accept": "application/json"},
            )
        response.raise_for_status()
        token_response: dict[str, Any] = response.json()
        return token_response


@contextlib.asynccontextmanager
async def running_simulator(
    *, server_options: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[SimulatorHandle]:
    """Start the real simulator app on a free port (test defaults, then `overrides`, which are
    SimulatorSettings fields). `server_options` go to uvicorn (e.g. `ws_ping_interval`)."""
    options = {**TEST_DEFAULTS, **overrides}
    settings = SimulatorSettings(**options)
    async with running_server(create_app(settings), **(server_options or {})) as server:
        yield SimulatorHandle(server=server, settings=settings)


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorHandle]:
    """A simulator with a demo token, the admin API and a 20 ms tick."""
    async with running_simulator() as handle:
        yield handle


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
            self.method = attributes.get("method", "get").lower()
        elif tag == "input" and "name" in attributes:
            self.fields.setdefault(attributes["name"], attributes.get("value", ""))
        elif tag == "select":
            self._select = attributes.get("name")
        elif tag == "option" and self._select and self._select not in self.fields:
            self.fields[self._select] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


async def login_via_dialog(
    http_url: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    base_path: str = "",
    user_id: str | None = None,
) -> str:
    """Log in through the dialog as a browser would (load the page, submit its form, read the
    redirect) and return the authorization code. Raises on an error or a state mismatch.
    `user_id` picks a demo user other than the form's default (DEMO01)."""
    dialog = f"{http_url.rstrip('/')}{base_path}/v2/login/authorization/dialog"
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
    }
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        page = await client.get(dialog, params=params)
        page.raise_for_status()
        form = _FormReader()
        form.feed(page.text)
        if form.action is None:
            raise RuntimeError("the login page has no form")
        if user_id is not None:
            form.fields["user_id"] = user_id
        target = urljoin(str(page.url), form.action)
        submitted = await client.request(form.method.upper(), target, data=form.fields)
    if submitted.status_code not in (302, 303):
        raise RuntimeError(f"login form answered {submitted.status_code}, not a redirect")
    location = submitted.headers["location"]
    if not location.startswith(redirect_uri):
        raise RuntimeError("login redirected somewhere other than the redirect_uri")
    query = parse_qs(urlsplit(location).query)
    if query.get("state") != [state]:
        raise RuntimeError("state mismatch on the login redirect")
    code = query["code"][0]
    if not re.fullmatch(r"[0-9a-f]{16,}", code):
        raise RuntimeError("unexpected authorization code format")
    return code
