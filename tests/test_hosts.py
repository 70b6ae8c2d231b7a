"""The Host allowlist: the pure rule, then every kind of service as a real server on port 0, as
`shared.serve.protect` serves it (the gateway's /ws through its own handshake), refusing
`Host: evil.example` and serving `Host: localhost:<port>`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.auth.app import create_app as create_auth
from services.auth.settings import AuthSettings
from services.dev.topology import Options, allowed_hosts
from services.front.proxy import create_front_app
from services.gateway.app import create_app as create_gateway
from services.gateway.app import server_options
from services.gateway.settings import GatewaySettings
from services.ingestor.app import create_app as create_ingestor
from services.ingestor.settings import IngestorSettings
from services.simulator.app import create_app as create_simulator
from services.simulator.settings import SimulatorSettings
from shared.framing import with_no_framing
from shared.hosts import HostPolicy, host_name, normalise_entry
from shared.serve import protect
from shared.settings import CommonSettings, SettingsError, load_settings
from tests.support.servers import RunningServer, running_server

EVIL = "evil.example"

# ---- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("localhost:8080", "localhost"),
        ("LocalHost.:8080", "localhost"),  # case and the root's trailing dot
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("example.com:", "example.com"),  # an empty port is allowed by RFC 3986
        ("::1", None),  # IPv6 needs brackets: these colons would be a port
        ("[::1", None),
        ("[::1]x", None),
        ("[evil.example]", None),
        ("localhost:80x", None),
        ("localhost:123456", None),
        ("evil.example/x", None),
        ("user@localhost", None),
        ("local host", None),
        ("", None),
        (".", None),
        ("a..b", None),
        (None, None),
    ],
)
def test_host_names_are_read_strictly(header: str | None, name: str | None) -> None:
    assert host_name(header) == name


def test_entries_are_names_wildcards_or_addresses() -> None:
    assert normalise_entry(" Example.COM. ") == "example.com"
    assert normalise_entry("[::1]") == normalise_entry("::1") == "::1"
    assert normalise_entry("*.Example.com") == "*.example.com"
    assert normalise_entry("*") == "*"
    for bad in ("http://example.com", "example.com:8080", "*example.com", "*.", "a/b", "[x]"):
        with pytest.raises(ValueError, match=r"not a host name|wildcard"):
            normalise_entry(bad)


def test_the_policy_matches_names_of_any_port_and_subdomains_of_wildcards() -> None:
    policy = HostPolicy.build(["localhost", "::1", "*.example.com", "tick.example.org"])
    for allowed in ("localhost", "LOCALHOST:9", "[::1]:8000", "a.example.com", "a.b.example.com"):
        assert policy.allows(allowed), allowed
    for refused in ("example.com", "xexample.com", "tick.example.org.evil", "127.0.0.1", None):
        assert not policy.allows(refused), refused
    assert HostPolicy.build(["*"]).allows("anything.at.all")


def test_forwarded_host_counts_only_from_a_trusted_peer() -> None:
    policy = HostPolicy.build(["localhost"], ["127.0.0.1", "10.0.0.0/8"])
    assert policy.admits("localhost", [], "192.0.2.1")
    # a proxy we trust forwarded a foreign host: refused, whichever hop named it
    assert not policy.admits("localhost", [EVIL], "10.1.2.3")
    assert not policy.admits("localhost", ["localhost, " + EVIL], "127.0.0.1")
    assert policy.admits("localhost", ["localhost:8080"], "127.0.0.1")
    # anyone else's X-Forwarded-Host says nothing (and cannot launder a foreign Host either)
    assert policy.admits("localhost", [EVIL], "192.0.2.1")
    assert not policy.admits(EVIL, ["localhost"], "127.0.0.1")
    assert HostPolicy.build(["localhost"], ["*"]).trusts("203.0.113.9")


def test_the_setting_defaults_to_loopback_and_auth_adds_its_public_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(CommonSettings).allowed_hosts() == ["localhost", "127.0.0.1", "::1"]
    monkeypatch.setenv("TICKSTREAM_ALLOWED_HOSTS", "ticks.example.com, *.corp.example")
    monkeypatch.setenv("UPSTOX_REDIRECT_URI", "https://Login.Example.net/exchange-token")
    auth = load_settings(AuthSettings)
    assert auth.allowed_hosts() == ["ticks.example.com", "*.corp.example", "login.example.net"]
    monkeypatch.setenv("TICKSTREAM_ALLOWED_HOSTS", "localhost,http://x")
    with pytest.raises(SettingsError, match="TICKSTREAM_ALLOWED_HOSTS"):
        load_settings(CommonSettings)


def test_tickstream_dev_adds_the_front_and_loopback_to_what_it_is_given() -> None:
    public = Options(public_url="https://ticks.example.com")
    assert allowed_hosts(public, None).split(",") == [
        "localhost",
        "127.0.0.1",
        "::1",
        "ticks.example.com",
    ]
    lan = Options(host="192.168.1.5")
    assert allowed_hosts(lan, "pc.lan").split(",") == ["pc.lan", "127.0.0.1", "192.168.1.5"]


def test_no_framing_is_added_once() -> None:
    page = [(b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'")]
    once = with_no_framing(page)
    assert with_no_framing(once) == once
    assert [name for name, _ in once].count(b"content-security-policy") == 1
    assert (b"x-frame-options", b"DENY") in once
    bare = with_no_framing([(b"content-security-policy", b"default-src 'self'")])
    assert (b"content-security-policy", b"frame-ancestors 'none'") in bare


# ---- every service, served as `tickstream <service>` serves it --------------------------------


async def status_for(server: RunningServer, path: str, host: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=10) as http:
        return await http.get(path, headers={"Host": host})


async def assert_host_guarded(server: RunningServer, path: str) -> None:
    refused = await status_for(server, path, EVIL)
    assert refused.status_code == 421, refused.text
    assert EVIL not in refused.text  # nothing echoed
    assert refused.headers["x-frame-options"] == "DENY"
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        served = await status_for(server, path, host)
        assert served.status_code == 200, (host, served.status_code, served.text)
        assert served.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in served.headers["content-security-policy"]


async def handshake_status(
    server: RunningServer, host: str, headers: dict[str, str] | None = None
) -> int:
    """The status of a WebSocket handshake for `host` (sent as the Host header) at /ws."""
    uri = f"ws://{host}:{server.port}/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            uri, host=server.host, port=server.port, additional_headers=headers, open_timeout=10
        ):
            pass
    return refused.value.response.status_code


@contextlib.asynccontextmanager
async def served(
    app: ASGIApp, settings: CommonSettings, **options: Any
) -> AsyncIterator[RunningServer]:
    async with running_server(protect(app, settings), **options) as server:
        yield server


AppMaker = Callable[[str], tuple[ASGIApp, CommonSettings]]


def auth_app(redis_url: str) -> tuple[ASGIApp, CommonSettings]:
    settings = AuthSettings(redis_url=redis_url, upstox_base_url="http://127.0.0.1:9")
    return create_auth(settings), settings


def simulator_app(redis_url: str) -> tuple[ASGIApp, CommonSettings]:
    settings = SimulatorSettings()
    return create_simulator(settings), settings


def ingestor_app(redis_url: str) -> tuple[ASGIApp, CommonSettings]:
    settings = IngestorSettings(redis_url=redis_url, upstox_base_url="http://127.0.0.1:9")
    return create_ingestor(settings), settings


@pytest.mark.parametrize(
    ("make", "path"),
    [(auth_app, "/healthz"), (simulator_app, "/healthz"), (ingestor_app, "/healthz")],
    ids=["auth", "simulator", "ingestor"],
)
async def test_each_service_refuses_a_foreign_host(
    redis_url: str, make: AppMaker, path: str
) -> None:
    app, settings = make(redis_url)
    async with served(app, settings) as server:
        await assert_host_guarded(server, path)


async def test_the_simulator_login_dialog_cannot_be_framed() -> None:
    settings = SimulatorSettings()
    query = {
        "response_type": "code",
        "client_id": settings.simulator_client_id,
        "redirect_uri": settings.simulator_redirect_uris[0],
    }
    async with (
        served(create_simulator(settings), settings) as server,
        httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http,
    ):
        page = await http.get("/v2/login/authorization/dialog", params=query)
    assert page.status_code == 200 and "<form" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_gateway_refuses_a_foreign_host_on_http_and_on_its_websocket(
    redis_url: str,
) -> None:
    settings = GatewaySettings(redis_url=redis_url, upstox_base_url="http://127.0.0.1:9")
    async with served(create_gateway(settings), settings, **server_options(settings)) as server:
        await assert_host_guarded(server, "/healthz")
        page = await status_for(server, "/", f"localhost:{server.port}")
        assert page.headers.get_list("x-frame-options") == ["DENY"]  # once, not twice
        assert await handshake_status(server, EVIL) == 421
        # the same host through a trusted proxy (the test is on 127.0.0.1) is refused too
        assert await handshake_status(server, "localhost", {"X-Forwarded-Host": EVIL}) == 421
        async with connect(f"{server.ws_url}/ws", open_timeout=10) as client:  # 127.0.0.1
            assert '"type":"status"' in str(await client.recv())


async def test_the_front_refuses_a_foreign_host_first(redis_url: str) -> None:
    settings = CommonSettings()
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(served(*simulator_app(redis_url)))
        front = create_front_app([upstream.http_url], upstream.http_url, upstream.http_url)
        server = await stack.enter_async_context(
            running_server(protect(front, settings, behind_proxies=False), lifespan="on")
        )
        await assert_host_guarded(server, "/_front/healthz")
        # the edge believes no X-Forwarded-Host, even from loopback: it is the edge
        async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
            headers = {"X-Forwarded-Host": EVIL}
            assert (await http.get("/_front/healthz", headers=headers)).status_code == 200
        assert await handshake_status(server, EVIL) == 421
