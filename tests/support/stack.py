"""The whole system for tests: `tickstream dev`'s topology (`DevStack`) on free ports.

```python
from tests.support.stack import running_stack

with running_stack(gateways=2) as stack:      # blocks until every service is ready
    stack.front_url, stack.front_ws_url, stack.gateway_urls, stack.auth_url,
    stack.simulator_url, stack.redis_url
    stack.kill("gateway-1")                   # SIGKILL, as a crash
    stack.start("gateway-1")                  # same port, waits until ready
    await stack.astart("gateway-1")           # the same from async code (keeps the loop free)
    await stack.admin("drop-connections")     # the simulator's fault API
    await stack.login()                       # the operator's login, through the front
    async with stack.operator() as browser: ...  # a client signed in as the operator
```

or as a pytest fixture: `whole_stack` (module scope: one stack per test module) — import it into a
conftest (`from tests.support.stack import whole_stack  # noqa: F401`).

The stack has its own `redis-server` by default (not the session fixture's): the per-test
`redis_url` fixture flushes its Redis, which would wipe a running stack's lease and login. Pass
`redis_url=` to share one anyway. Every service's output goes to
`test-artifacts/system/<stack>.log`; `logs(name)` has the recent lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest
import redis.asyncio as aioredis

from services.auth.operator import mint_code
from services.dev.stack import DevStack
from services.dev.topology import Options, gateway_name, ingestor_name
from shared import redis_contract as rc
from shared.resp import as_text

__all__ = ["FAST_SETTINGS", "Stack", "running_stack", "whole_stack"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "system"

# Settings that make faults heal in seconds rather than tens of seconds: small tick interval,
# short leases, short backoffs. Counts and order are asserted, never durations.
FAST_SETTINGS: Mapping[str, str] = {
    "SIMULATOR_TICK_INTERVAL_MS": "100",
    "INGESTOR_LEASE_TTL_MS": "1500",
    "INGESTOR_BACKOFF_INITIAL": "0.2",
    "INGESTOR_BACKOFF_MAX": "2",
    "INGESTOR_STABLE_AFTER_SECONDS": "2",
    "INGESTOR_DEMAND_RESCAN_SECONDS": "1",
    "INGESTOR_TOKEN_RECHECK_SECONDS": "2",
    "INGESTOR_PING_INTERVAL": "2",
    "INGESTOR_PING_TIMEOUT": "5",
    "GATEWAY_DEMAND_LEASE_SECONDS": "3",
}

# Every test signs in as the operator, and polls the recording, from 127.0.0.1: many sign-ins
# and queries a minute from one address (each limit has a test of its own).
TEST_SETTINGS: Mapping[str, str] = {
    "AUTH_OPERATOR_LOGINS_PER_MINUTE": "600",
    "RECORDER_QUERIES_PER_MINUTE": "100000",
}

_counter = itertools.count(1)


class _LogFile:
    """The sink: every line of every service, prefixed, into one file."""

    def __init__(self, path: Path, width: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO = path.open("w", encoding="utf-8")
        self._width = width
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(f"{name:<{self._width}} | {line}\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Stack:
    """Control of a running `DevStack`, in the terms the tests use."""

    def __init__(self, dev: DevStack, log_path: Path) -> None:
        self.dev = dev
        self.log_path = log_path

    # ---- addresses -----------------------------------------------------------------------

    @property
    def front_url(self) -> str:
        return self.dev.front_url

    @property
    def front_ws_url(self) -> str:
        return "ws" + self.dev.front_url.removeprefix("http") + "/ws"

    @property
    def gateway_urls(self) -> list[str]:
        return self.dev.gateway_urls

    @property
    def auth_url(self) -> str:
        return self.dev.auth_url

    @property
    def simulator_url(self) -> str:
        return self.dev.simulator_url

    @property
    def redis_url(self) -> str:
        return self.dev.redis_url

    @property
    def names(self) -> list[str]:
        return self.dev.names

    @property
    def ingestors(self) -> list[str]:
        return [n for n in self.names if n.startswith(ingestor_name(0)[:-1])]

    @property
    def gateways(self) -> list[str]:
        return [n for n in self.names if n.startswith(gateway_name(0)[:-1])]

    # ---- control -------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL `name` (a crash: no clean-up, no lease released)."""
        self.dev.kill(name)

    def start(self, name: str) -> None:
        """Start `name` again on its port and wait until it is ready."""
        self.dev.start(name)

    def stop(self, name: str) -> None:
        """Stop `name` gracefully (SIGTERM)."""
        self.dev.stop(name)

    def restart(self, name: str) -> None:
        self.dev.restart(name)

    async def akill(self, name: str) -> None:
        await asyncio.to_thread(self.dev.kill, name)

    async def astart(self, name: str) -> None:
        await asyncio.to_thread(self.dev.start, name)

    async def astop(self, name: str) -> None:
        await asyncio.to_thread(self.dev.stop, name)

    def heal(self) -> list[str]:
        """Start every service that is not running (after a failed drill); returns their names."""
        down = [name for name in self.names if not self.dev.running(name)]
        for name in down:
            self.dev.start(name)
        return down

    def running(self, name: str) -> bool:
        return self.dev.running(name)

    def pids(self) -> dict[str, int]:
        return self.dev.pids()

    def unexpected_exits(self) -> dict[str, int]:
        return self.dev.unexpected_exits()

    def logs(self, name: str) -> list[str]:
        return self.dev.logs(name)

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.logs(name)[-lines:])

    def assert_survivors(self, before: Mapping[str, int], killed: str | None = None) -> None:
        """Every process in `before` (a `pids()` snapshot) but `killed` is still the same one."""
        now = self.pids()
        lost = {
            name: pid for name, pid in before.items() if name != killed and now.get(name) != pid
        }
        assert not lost, (
            f"processes died besides {killed}: {lost}; unexpected exits "
            f"{self.unexpected_exits()}; logs in {self.log_path}"
        )

    # ---- the simulator's fault API -------------------------------------------------------

    async def admin(self, action: str, method: str = "POST", **params: Any) -> dict[str, Any]:
        """Call the simulator's `/admin/{action}`; returns its `data`."""
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            response = await client.request(
                method,
                f"{self.simulator_url}/admin/{action}",
                params=params,
                headers={"X-Admin-Key": self.dev.admin_key},
            )
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    # ---- Redis and the ingestors ---------------------------------------------------------

    async def active_ingestor(self) -> str | None:
        """The name of the ingestor holding the lease (None: nobody does right now)."""
        client: aioredis.Redis = aioredis.Redis.from_url(self.redis_url)
        try:
            holder = await client.get(rc.INGESTOR_LEASE)
        finally:
            await client.aclose()
        if holder is None:
            return None
        return as_text(holder)

    # ---- the browser's login -------------------------------------------------------------

    async def mint_operator_link(self) -> str:
        """A one-time operator sign-in link, minted as `tickstream operator-link` does."""
        client: aioredis.Redis = aioredis.Redis.from_url(self.redis_url)
        try:
            code = await mint_code(client, 600)
        finally:
            await client.aclose()
        return f"{self.front_url}/auth/operator?code={code}"

    @contextlib.asynccontextmanager
    async def operator(self) -> AsyncIterator[httpx.AsyncClient]:
        """A browser signed in as the operator through the front (its cookie jar holds the
        operator's cookie; every request carries the session's CSRF token)."""
        async with httpx.AsyncClient(timeout=20, trust_env=False, follow_redirects=True) as browser:
            signed = await browser.get(await self.mint_operator_link())
            _expect_ok(signed, "the operator's sign-in link")
            session = await browser.get(self.front_url + "/session")
            _expect_ok(session, "GET /session as the operator")
            browser.headers["X-CSRF-Token"] = session.json()["csrf_token"]
            yield browser

    async def login(self, user_id: str | None = None) -> httpx.Response:
        """Log in as the operator does: sign in (a one-time link), the front's /authorize, the
        simulated Upstox dialog (through the front), its button, back to /exchange-token, on
        to the dashboard.

        Returns the last response (the dashboard page). Raises if any step fails.
        """
        async with self.operator() as browser:
            dialog = await browser.get(self.front_url + "/authorize")
            _expect_ok(dialog, "GET /authorize (to the login dialog)")
            form = _parse_form(dialog.text)
            if user_id is not None:
                form.fields["user_id"] = user_id
            action = httpx.URL(str(dialog.url)).join(form.action)
            assert str(action).startswith(self.front_url), f"dialog left the front: {action}"
            landed = await browser.post(str(action), data=form.fields)
            _expect_ok(landed, "the dialog's button (callback, then the dashboard)")
            hops = [str(r.headers.get("location", "")) for r in landed.history]
            assert any("/exchange-token" in hop for hop in hops), f"no callback in {hops}"
            return landed


def _expect_ok(response: httpx.Response, step: str) -> None:
    if not response.is_success:
        hops = " -> ".join(str(r.url.copy_with(query=None)) for r in response.history)
        raise AssertionError(
            f"login failed at {step}: HTTP {response.status_code} from "
            f"{response.url.copy_with(query=None)} (after {hops or 'no redirects'}): "
            f"{response.text[:300]}"
        )


class _Form(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = attributes.get("action", "")
        elif tag == "input" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "select" and attributes.get("name"):
            self._select = attributes["name"]
        elif tag == "option" and self._select:
            self.fields.setdefault(self._select, attributes.get("value", ""))


def _parse_form(page: str) -> _Form:
    form = _Form()
    form.feed(page)
    assert form.action, "the login dialog has no form"
    return form


@contextlib.contextmanager
def running_stack(
    *,
    gateways: int = 2,
    overrides: Mapping[str, str] | None = None,
    redis_url: str | None = None,
    fast: bool = True,
) -> Iterator[Stack]:
    """The whole topology on free ports until the block ends (then every process is stopped)."""
    env = {**TEST_SETTINGS, **(FAST_SETTINGS if fast else {}), **(overrides or {})}
    options = Options(port=0, gateways=gateways, redis_url=redis_url)
    dev = DevStack(options, overrides=env, base_env=_base_env())
    log_path = ARTIFACTS / f"stack-{os.getpid()}-{next(_counter)}.log"
    sink = _LogFile(log_path, max(len(name) for name in dev.names))
    dev.log_sink = sink
    try:
        try:
            dev.start()
        except Exception as error:
            raise AssertionError(f"the stack did not start: {error}") from None
        yield Stack(dev, log_path)
    finally:
        dev.close()
        sink.close()


def _base_env() -> dict[str, str]:
    """The test process's environment, less anything that would steer the services elsewhere."""
    steering = ("REDIS_URL", "UPSTOX_", "API_KEY", "API_SECRET", "SIMULATOR_", "GATEWAY_",
                "INGESTOR_", "AUTH_", "TOKEN_ENCRYPTION_KEY", "INTERNAL_SERVICE_KEY")  # fmt: skip
    return {k: v for k, v in os.environ.items() if not k.startswith(steering)}


@pytest.fixture(scope="module")
def whole_stack() -> Iterator[Stack]:
    """One stack per test module (2 gateways, fast settings); tests must leave it whole."""
    with running_stack() as stack:
        yield stack


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll a synchronous predicate; `timeout` is only an upper bound for waiting."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
