"""The front's pure parts: the route table, header rules, close codes, round robin."""

from __future__ import annotations

import pytest

from services.front.proxy import RoundRobin
from services.front.routes import (
    AMBIGUOUS_PATH,
    NOT_FOUND,
    NOT_ORIGIN_FORM,
    ClientInfo,
    Refusal,
    Target,
    Upstream,
    admit,
    end_to_end,
    relay_close_to_client,
    relay_close_to_upstream,
    request_headers,
    rewrite_location,
    route,
    websocket_request_headers,
)


@pytest.mark.parametrize(
    ("path", "upstream", "upstream_path"),
    [
        ("/authorize", Upstream.AUTH, "/authorize"),
        ("/exchange-token", Upstream.AUTH, "/exchange-token"),
        ("/session", Upstream.AUTH, "/session"),
        ("/logout", Upstream.AUTH, "/logout"),
        ("/user-profile/USER1", Upstream.AUTH, "/user-profile/USER1"),
        ("/auth", Upstream.AUTH, "/"),
        ("/auth/", Upstream.AUTH, "/"),
        ("/auth/static/x.css", Upstream.AUTH, "/static/x.css"),
        ("/v2/login/authorization/dialog", Upstream.SIMULATOR, "/v2/login/authorization/dialog"),
        ("/", Upstream.GATEWAY, "/"),
        ("/ws", Upstream.GATEWAY, "/ws"),
        ("/api/instruments", Upstream.GATEWAY, "/api/instruments"),
        ("/static/app.js", Upstream.GATEWAY, "/static/app.js"),
        ("/healthz", Upstream.GATEWAY, "/healthz"),
        ("/api/ticks/NSE_EQ|INE002A01018", Upstream.RECORDER, "/api/ticks/NSE_EQ|INE002A01018"),
        ("/api/candles/NSE_INDEX|Nifty 50", Upstream.RECORDER, "/api/candles/NSE_INDEX|Nifty 50"),
        ("/api/recording/gaps", Upstream.RECORDER, "/api/recording/gaps"),
        ("/api/history/NSE_INDEX|Nifty 50", Upstream.GATEWAY, "/api/history/NSE_INDEX|Nifty 50"),
        ("/api/status", Upstream.GATEWAY, "/api/status"),
        # near misses stay with the gateways
        ("/authorized", Upstream.GATEWAY, "/authorized"),
        ("/authx", Upstream.GATEWAY, "/authx"),
        ("/token", Upstream.GATEWAY, "/token"),
        ("/v2/user/profile", Upstream.GATEWAY, "/v2/user/profile"),
        ("/api/ticks", Upstream.GATEWAY, "/api/ticks"),
        ("/api/ticksx/K", Upstream.GATEWAY, "/api/ticksx/K"),
        ("/api/recordings", Upstream.GATEWAY, "/api/recordings"),
        ("/API/ticks/K", Upstream.GATEWAY, "/API/ticks/K"),
    ],
)
def test_route_table(path: str, upstream: Upstream, upstream_path: str) -> None:
    target = route(path)
    assert (target.upstream, target.path) == (upstream, upstream_path)


@pytest.mark.parametrize(
    ("raw_path", "path", "expected"),
    [
        ("@host/x", "@host/x", NOT_ORIGIN_FORM),
        ("http://host/x", "http://host/x", NOT_ORIGIN_FORM),
        ("*", "*", NOT_ORIGIN_FORM),
        ("", "", NOT_ORIGIN_FORM),
        ("/api/../metrics", "/api/../metrics", AMBIGUOUS_PATH),
        ("/api/%2e%2e/metrics", "/api/../metrics", AMBIGUOUS_PATH),
        ("/api/..%2Fmetrics", "/api/../metrics", AMBIGUOUS_PATH),
        ("/api/./x", "/api/./x", AMBIGUOUS_PATH),
        ("/..", "/..", AMBIGUOUS_PATH),
        ("/.", "/.", AMBIGUOUS_PATH),
        ("//metrics", "//metrics", AMBIGUOUS_PATH),
        ("/%2Fmetrics", "//metrics", AMBIGUOUS_PATH),
        ("/metrics", "/metrics", NOT_FOUND),
        ("/metrics/", "/metrics/", NOT_FOUND),
        ("/metrics/x", "/metrics/x", NOT_FOUND),
        ("/auth/metrics", "/auth/metrics", NOT_FOUND),
        ("/token/USER1", "/token/USER1", NOT_FOUND),
        ("/auth/token/USER1", "/auth/token/USER1", NOT_FOUND),
        ("/api/ticks/../metrics", "/api/ticks/../metrics", AMBIGUOUS_PATH),
        ("/api/ticks/K", "/api/ticks/K", Target(Upstream.RECORDER, "/api/ticks/K")),
        ("/METRICS", "/METRICS", Target(Upstream.GATEWAY, "/METRICS")),
        ("/api/x/", "/api/x/", Target(Upstream.GATEWAY, "/api/x/")),
        ("/api/...", "/api/...", Target(Upstream.GATEWAY, "/api/...")),
        ("/", "/", Target(Upstream.GATEWAY, "/")),
        ("/auth/", "/auth/", Target(Upstream.AUTH, "/", "/auth")),
    ],
)
def test_the_edge_admits_or_refuses(raw_path: str, path: str, expected: Target | Refusal) -> None:
    assert admit(raw_path, path) == expected


def test_login_dialog_goes_to_the_gateways_without_a_simulator() -> None:
    assert route("/v2/login/authorization/dialog", has_simulator=False).upstream is Upstream.GATEWAY


def test_recordings_go_to_the_gateways_without_a_recorder() -> None:
    for path in ("/api/ticks/K", "/api/candles/K", "/api/recording/gaps"):
        assert route(path, has_recorder=False) == Target(Upstream.GATEWAY, path)
        assert admit(path, path, has_recorder=False) == Target(Upstream.GATEWAY, path)


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Private", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Type", b"text/plain"),
    ]
    assert end_to_end(headers) == [
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Type", b"text/plain"),
    ]


def test_forwarded_headers_replace_a_client_supplied_chain_and_outside_keys_are_dropped() -> None:
    client = ClientInfo(address="10.0.0.9", scheme="https", host="front.example:8080")
    headers = [
        (b"host", b"front.example:8080"),
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"http"),
        (b"X-Internal-Key", b"guessed"),
        (b"cookie", b"c=1"),
    ]
    result = request_headers(headers, client)
    assert result == [
        (b"host", b"front.example:8080"),
        (b"cookie", b"c=1"),
        (b"x-forwarded-for", b"10.0.0.9"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"front.example:8080"),
    ]


def test_websocket_handshake_headers_are_left_to_each_leg() -> None:
    client = ClientInfo(address="127.0.0.1", scheme="http", host="h:1")
    headers = [
        (b"host", b"h:1"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", b"abc"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-protocol", b"p1"),
        (b"origin", b"http://h:1"),
        (b"cookie", b"c=1"),
    ]
    names = [name for name, _ in websocket_request_headers(headers, client)]
    assert names == [b"cookie", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (b"http://127.0.0.1:9001/next?a=1", b"http://front:8080/next?a=1"),
        (b"http://127.0.0.1:9001", b"http://front:8080"),
        (b"/relative", b"/relative"),
        (b"http://127.0.0.1:90011/x", b"http://127.0.0.1:90011/x"),
        (b"https://api.upstox.com/v2/login", b"https://api.upstox.com/v2/login"),
    ],
)
def test_location_rewrite(location: bytes, expected: bytes) -> None:
    assert rewrite_location(location, "http://127.0.0.1:9001", "http://front:8080") == expected


def test_close_codes_cross_the_proxy_and_unsendable_ones_are_mapped() -> None:
    assert [relay_close_to_client(c) for c in (1000, 1008, 1009, 4000, 4001)] == [
        1000,
        1008,
        1009,
        4000,
        4001,
    ]
    assert relay_close_to_client(1005) == 1000
    assert relay_close_to_client(1006) == 1012  # gateway vanished: reconnect
    assert relay_close_to_client(None) == 1012
    assert relay_close_to_upstream(4321) == 4321
    assert relay_close_to_upstream(1005) == 1000
    assert relay_close_to_upstream(1006) == 1001  # client vanished: going away


def test_round_robin_starts_one_further_each_time() -> None:
    rr = RoundRobin(["http://a", "http://b/", "http://c"])
    assert rr.order() == ["http://a", "http://b", "http://c"]
    assert rr.order() == ["http://b", "http://c", "http://a"]
    assert rr.order() == ["http://c", "http://a", "http://b"]
    assert rr.order() == ["http://a", "http://b", "http://c"]
    with pytest.raises(ValueError):
        RoundRobin([])
