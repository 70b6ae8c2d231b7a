"""The front against small real upstream servers: routing, headers, bodies, WebSocket relay."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from services.front.proxy import HEALTH_PATH, create_front_app
from tests.support.servers import RunningServer, running_server

WAIT = 10.0  # upper bound for anything to arrive; never a timing assertion


@dataclass
class Upstream:
    """What one throwaway upstream saw."""

    name: str
    paths: list[str] = field(default_factory=list)  # every HTTP request's path, as it arrived
    close_codes: list[tuple[int, str]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def upstream_app(upstream: Upstream) -> Starlette:
    async def echo(request: Request) -> Response:
        upstream.paths.append(request.scope["raw_path"].decode())
        body = await request.body()
        return JSONResponse(
            {
                "who": upstream.name,
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "host": request.headers.get("host"),
                "xff": request.headers.get("x-forwarded-for"),
                "proto": request.headers.get("x-forwarded-proto"),
                "xhost": request.headers.get("x-forwarded-host"),
                "cookie": request.headers.get("cookie"),
                "body_len": len(body),
                "body_sha": hashlib.sha256(body).hexdigest(),
            }
        )

    async def redirect_relative(request: Request) -> Response:
        return RedirectResponse("/landed?x=1", status_code=302)

    async def redirect_absolute(request: Request) -> Response:
        own = f"http://{request.scope['server'][0]}:{request.scope['server'][1]}"
        return RedirectResponse(own + "/landed", status_code=303)

    async def cookies(request: Request) -> Response:
        response = Response("ok")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(200):
                yield b"%05d" % i * 100

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def status(request: Request) -> Response:
        return Response("teapot", status_code=418, headers={"x-custom": "kept"})

    async def ws(websocket: WebSocket) -> None:
        subprotocols = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=subprotocols[0] if subprotocols else None)
        await websocket.send_json(
            {
                "who": upstream.name,
                "origin": websocket.headers.get("origin"),
                "host": websocket.headers.get("host"),
                "xff": websocket.headers.get("x-forwarded-for"),
                "xhost": websocket.headers.get("x-forwarded-host"),
                "cookie": websocket.headers.get("cookie"),
                "query": websocket.url.query,
                "subprotocol": subprotocols[0] if subprotocols else None,
            }
        )
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    upstream.close_codes.append((message.get("code", 0), message.get("reason", "")))
                    upstream.closed.set()
                    return
                if message.get("text", "").startswith("close:"):
                    _, code, reason = message["text"].split(":", 2)
                    await websocket.close(int(code), reason)
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect as disconnect:
            upstream.close_codes.append((disconnect.code, disconnect.reason or ""))
            upstream.closed.set()

    async def ws_deny(websocket: WebSocket) -> None:
        await websocket.close(1008)  # before accept: the server answers the handshake with 403

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/redirect-relative", redirect_relative),
            Route("/redirect-absolute", redirect_absolute),
            Route("/cookies", cookies),
            Route("/stream", stream),
            Route("/teapot", status),
            WebSocketRoute("/ws", ws),
            WebSocketRoute("/ws-deny", ws_deny),
            Route("/{path:path}", echo, methods=methods),
        ]
    )


def dead_url() -> str:
    """A URL where nothing listens (a killed replica)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Topology:
    front: RunningServer
    gateways: list[Upstream]
    auth: Upstream
    simulator: Upstream

    auth_port: int = 0
    recorder: Upstream | None = None

    @property
    def url(self) -> str:
        return self.front.http_url


@contextlib.asynccontextmanager
async def topology(
    gateway_count: int = 2,
    dead_gateways: int = 0,
    *,
    dead_first: bool = True,
    with_recorder: bool = True,
) -> AsyncIterator[Topology]:
    gateways = [Upstream(f"gateway-{i + 1}") for i in range(gateway_count)]
    auth, simulator = Upstream("auth"), Upstream("simulator")
    recorder = Upstream("recorder") if with_recorder else None
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(running_server(upstream_app(g))) for g in gateways
        ]
        auth_server = await stack.enter_async_context(running_server(upstream_app(auth)))
        sim_server = await stack.enter_async_context(running_server(upstream_app(simulator)))
        urls = [s.http_url for s in servers]
        dead = [dead_url() for _ in range(dead_gateways)]
        urls = dead + urls if dead_first else urls + dead
        recorder_url = None
        if recorder is not None:
            recorder_server = await stack.enter_async_context(
                running_server(upstream_app(recorder))
            )
            recorder_url = recorder_server.http_url
        app = create_front_app(urls, auth_server.http_url, sim_server.http_url, recorder_url)
        # as `tickstream front` serves it: the edge, so the TCP peer is the client; h11
        front = await stack.enter_async_context(
            running_server(app, proxy_headers=False, http="h11")
        )
        yield Topology(front, gateways, auth, simulator, auth_server.port, recorder)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as client:
        yield client


# ---- HTTP --------------------------------------------------------------------------------


ROUTES = [
    ("/authorize", "auth", "/authorize"),
    ("/exchange-token", "auth", "/exchange-token"),
    ("/user-profile/U1", "auth", "/user-profile/U1"),
    ("/auth/", "auth", "/"),
    ("/auth", "auth", "/"),
    ("/v2/login/authorization/dialog", "simulator", "/v2/login/authorization/dialog"),
    ("/api/instruments", "gateway-1", "/api/instruments"),
    ("/", "gateway-1", "/"),
    ("/api/ticks/NSE_EQ|INE002A01018", "recorder", "/api/ticks/NSE_EQ|INE002A01018"),
    ("/api/candles/NSE_INDEX|Nifty 50", "recorder", "/api/candles/NSE_INDEX|Nifty 50"),
    ("/api/recording/gaps", "recorder", "/api/recording/gaps"),
    ("/api/history/NSE_INDEX|Nifty 50", "gateway-1", "/api/history/NSE_INDEX|Nifty 50"),
    ("/api/ticks", "gateway-1", "/api/ticks"),
]


async def test_http_routes_reach_their_upstream(http: httpx.AsyncClient) -> None:
    seen = []
    async with topology(gateway_count=1) as top:
        for path, _, _ in ROUTES:
            response = await http.get(top.url + path, params={"q": "a b"})
            assert response.status_code == 200, path
            body = response.json()
            seen.append((path, body["who"], body["path"]))
            assert body["query"] == "q=a+b"
    assert seen == ROUTES


async def test_metrics_stay_inside_the_topology(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        # the upstream answers every path, so a 404 can only come from the front itself
        assert (await http.get(top.url + "/metrics")).status_code == 404
        assert (await http.get(top.url + "/healthz")).status_code == 200


async def test_without_a_recorder_its_paths_stay_with_the_gateways(
    http: httpx.AsyncClient,
) -> None:
    """`tickstream front` with no --recorder: the gateways answer (404 from a real one)."""
    async with topology(gateway_count=1, with_recorder=False) as top:
        body = (await http.get(top.url + "/api/ticks/NSE_EQ|INE002A01018")).json()
    assert (body["who"], body["path"]) == ("gateway-1", "/api/ticks/NSE_EQ|INE002A01018")


async def test_the_recorders_raw_path_is_passed_as_sent(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        seen = (await http.get(top.url + "/api/candles/NSE_INDEX%7CNifty%2050?interval=1m")).json()
        assert top.recorder is not None
        assert top.recorder.paths == ["/api/candles/NSE_INDEX%7CNifty%2050"]
    assert (seen["who"], seen["query"]) == ("recorder", "interval=1m")


async def test_raw_path_encoding_survives_prefix_removal(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        auth_seen = (await http.get(top.url + "/auth/a%20b%2Fc")).json()
        gateway_seen = (await http.get(top.url + "/api/x%7Cy")).json()
        # the prefix spelled with an encoded slash: routed as decoded, so auth gets `/static`
        encoded_seen = (await http.get(top.url + "/auth%2Fstatic")).json()
    assert auth_seen["raw_path"] == "/a%20b%2Fc"
    assert gateway_seen["raw_path"] == "/api/x%7Cy"
    assert (encoded_seen["who"], encoded_seen["path"]) == ("auth", "/static")


# ---- the edge: what never reaches an upstream ----------------------------------------------


async def raw_request(top: Topology, target: str, method: str = "GET") -> tuple[int, str]:
    """One request with `target` exactly as written (httpx would normalise it): status, body."""
    reader, writer = await asyncio.open_connection(top.front.host, top.front.port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n"
        writer.write(head.encode("latin-1"))
        data = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()


def reached(top: Topology) -> list[str]:
    upstreams = (*top.gateways, top.auth, top.simulator, *([top.recorder] if top.recorder else []))
    return [path for u in upstreams for path in u.paths]


NOT_ORIGIN_FORM = (400, "origin-form request targets only\n")
AMBIGUOUS = (400, "dot segments and empty segments are refused\n")
INTERNAL = (404, "not found\n")


@pytest.mark.parametrize(
    ("target", "method", "answer"),
    [
        # h11 passes it on as sent: base + target named another host (auth, as userinfo@host)
        ("@{auth}/authorize", "GET", NOT_ORIGIN_FORM),
        ("http://{auth}/authorize", "GET", NOT_ORIGIN_FORM),  # absolute-form
        ("*", "OPTIONS", NOT_ORIGIN_FORM),  # asterisk-form
        # an upstream could resolve or merge these into another path than the one routed
        ("/api/../metrics", "GET", AMBIGUOUS),
        ("/api/%2e%2e/metrics", "GET", AMBIGUOUS),
        ("/api/%2E%2e/metrics", "GET", AMBIGUOUS),
        ("/api/..%2Fmetrics", "GET", AMBIGUOUS),
        ("/auth/../metrics", "GET", AMBIGUOUS),
        ("/auth/%2e%2e/token/U1", "GET", AMBIGUOUS),
        ("/api/./instruments", "GET", AMBIGUOUS),
        ("/api/%2e/instruments", "GET", AMBIGUOUS),
        ("/..", "GET", AMBIGUOUS),
        ("//metrics", "GET", AMBIGUOUS),
        ("/%2Fmetrics", "GET", AMBIGUOUS),
        ("/auth//metrics", "GET", AMBIGUOUS),
        ("/api//instruments", "GET", AMBIGUOUS),
        # the recorder's paths: its /metrics and /status are not reachable through them
        ("/api/ticks/../../metrics", "GET", AMBIGUOUS),
        ("/api/recording/%2e%2e/%2e%2e/status", "GET", AMBIGUOUS),
        ("/api/candles//x", "GET", AMBIGUOUS),
        # internal, as spelled or as the upstream would get it once /auth is removed
        ("/metrics", "GET", INTERNAL),
        ("/metrics?format=text", "GET", INTERNAL),
        ("/metrics/", "GET", INTERNAL),
        ("/metrics/x", "GET", INTERNAL),
        ("/auth/metrics", "GET", INTERNAL),
        ("/auth/metrics/", "GET", INTERNAL),
        ("/%6detrics", "GET", INTERNAL),
        ("/token/U1", "GET", INTERNAL),
        ("/token/", "GET", INTERNAL),
        ("/auth/token/U1", "GET", INTERNAL),
    ],
)
async def test_the_edge_refuses_before_any_upstream(
    target: str, method: str, answer: tuple[int, str]
) -> None:
    async with topology(gateway_count=1) as top:
        auth = f"127.0.0.1:{top.auth_port}"
        assert await raw_request(top, target.format(auth=auth), method) == answer
        assert reached(top) == []


@pytest.mark.parametrize(
    "target",
    [
        "/METRICS",
        "/Metrics",
        "/metricsx",
        "/api/metrics",
        "/token",
        "/api/x/",
        "/api/..x",
        "/.well",
    ],
)
async def test_near_misses_are_routed_as_spelled(target: str) -> None:
    """Paths are case-sensitive (every upstream's routes are): `/METRICS` is not `/metrics`."""
    async with topology(gateway_count=1) as top:
        status, body = await raw_request(top, target)
        assert status == 200
        assert json.loads(body)["raw_path"] == target
        assert reached(top) == [target]


async def test_forwarding_headers_and_host(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        response = await http.get(
            top.url + "/api/x", headers={"cookie": "sid=1", "x-forwarded-for": "192.0.2.7"}
        )
        front_host = f"{top.front.host}:{top.front.port}"
    seen = response.json()
    assert seen["host"] == front_host
    assert seen["xhost"] == front_host
    assert seen["proto"] == "http"
    assert seen["xff"] == "127.0.0.1"  # the edge believes no X-Forwarded-For from outside
    assert seen["cookie"] == "sid=1"


async def test_redirects_are_passed_through_not_followed(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        relative = await http.get(top.url + "/redirect-relative")
        absolute = await http.get(top.url + "/redirect-absolute")
    assert relative.status_code == 302
    assert relative.headers["location"] == "/landed?x=1"
    assert absolute.status_code == 303
    # the gateway's own address is never shown to the browser: it points at the front
    assert absolute.headers["location"] == top.url + "/landed"


async def test_status_headers_and_repeated_cookies_are_kept(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1) as top:
        teapot = await http.get(top.url + "/teapot")
        cookies = await http.get(top.url + "/cookies")
    assert (teapot.status_code, teapot.text, teapot.headers["x-custom"]) == (418, "teapot", "kept")
    assert len(cookies.headers.get_list("set-cookie")) == 2
    assert dict(cookies.cookies) == {"a": "1", "b": "2"}


async def test_large_bodies_stream_both_ways(http: httpx.AsyncClient) -> None:
    payload = bytes(range(256)) * 12_000  # ~3 MB, chunked upload

    async def upload() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    async with topology(gateway_count=1) as top:
        posted = await http.post(top.url + "/api/upload", content=upload())
        streamed = await http.get(top.url + "/stream")
    assert posted.json()["method"] == "POST"
    assert posted.json()["body_len"] == len(payload)
    assert posted.json()["body_sha"] == hashlib.sha256(payload).hexdigest()
    assert streamed.content == b"".join(b"%05d" % i * 100 for i in range(200))


async def test_http_round_robin_over_replicas(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=2) as top:
        whos = [(await http.get(top.url + "/api/x")).json()["who"] for _ in range(6)]
    assert whos == ["gateway-1", "gateway-2"] * 3


async def test_http_skips_a_replica_that_refuses(http: httpx.AsyncClient) -> None:
    async with topology(gateway_count=1, dead_gateways=1) as top:
        responses = [await http.post(top.url + "/api/x", content=b"body") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.json()["who"] for r in responses} == {"gateway-1"}
    assert {r.json()["body_len"] for r in responses} == {4}


async def test_http_no_replica_reachable_is_a_502(http: httpx.AsyncClient) -> None:
    app = create_front_app([dead_url(), dead_url()], dead_url(), None)
    async with running_server(app) as front:
        gateway = await http.get(front.http_url + "/api/x")
        auth = await http.get(front.http_url + "/authorize")
        health = await http.get(front.http_url + HEALTH_PATH)
    assert (gateway.status_code, gateway.text) == (502, "no gateway is reachable\n")
    assert (auth.status_code, auth.text) == (502, "no auth is reachable\n")
    assert health.status_code == 200  # the front itself is up


# ---- WebSocket ---------------------------------------------------------------------------


def ws_url(top: Topology, path: str = "/ws") -> str:
    return top.front.ws_url + path


async def test_websocket_relays_both_ways_with_headers() -> None:
    async with topology(gateway_count=1) as top:
        headers = {"Origin": top.url, "Cookie": "sid=2"}
        protocols = [Subprotocol("tickstream.v1")]
        url = ws_url(top, "/ws?client=7")
        async with connect(
            url, additional_headers=headers, subprotocols=protocols, proxy=None
        ) as ws:
            hello = await asyncio.wait_for(ws.recv(), WAIT)
            await ws.send("text frame")
            text = await asyncio.wait_for(ws.recv(), WAIT)
            await ws.send(b"\x00\x01binary")
            binary = await asyncio.wait_for(ws.recv(), WAIT)
            assert ws.subprotocol == "tickstream.v1"
    seen = json.loads(hello)
    assert seen["who"] == "gateway-1"
    assert seen["origin"] == top.url
    assert seen["host"] == f"{top.front.host}:{top.front.port}"  # as the browser sent it
    assert seen["cookie"] == "sid=2"
    assert seen["query"] == "client=7"
    assert seen["xff"] == "127.0.0.1"
    assert seen["xhost"] == f"{top.front.host}:{top.front.port}"
    assert (text, binary) == ("text frame", b"\x00\x01binary")


async def test_upstream_close_code_and_reason_reach_the_client() -> None:
    async with topology(gateway_count=1) as top, connect(ws_url(top), proxy=None) as ws:
        await asyncio.wait_for(ws.recv(), WAIT)
        await ws.send("close:4001:idle timeout")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        assert ws.close_code == 4001
        assert ws.close_reason == "idle timeout"


async def test_client_close_code_reaches_the_upstream() -> None:
    async with topology(gateway_count=1) as top:
        async with connect(ws_url(top), proxy=None) as ws:
            await asyncio.wait_for(ws.recv(), WAIT)
            await ws.close(4321, "bye")
        await asyncio.wait_for(top.gateways[0].closed.wait(), WAIT)
        assert top.gateways[0].close_codes == [(4321, "bye")]


async def test_websocket_round_robin_and_dead_replica_skipped() -> None:
    async with topology(gateway_count=2, dead_gateways=1, dead_first=False) as top:
        whos = []
        for _ in range(6):
            async with connect(ws_url(top), proxy=None) as ws:
                whos.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT))["who"])
    # the dead replica's turns fall to the next live one; every connection succeeds
    assert len(whos) == 6
    assert set(whos) == {"gateway-1", "gateway-2"}


async def test_upstream_refusing_the_handshake_is_passed_on() -> None:
    async with topology(gateway_count=1) as top:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(top, "/ws-deny"), proxy=None):
                pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/%2e%2e/ws", 400), ("//ws", 400), ("/auth/metrics", 404), ("/token/U1", 404)],
)
async def test_the_edge_refuses_websocket_handshakes_as_requests(path: str, status: int) -> None:
    async with topology(gateway_count=1) as top:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(top, path), proxy=None):
                pass
        assert refused.value.response.status_code == status
        assert top.gateways[0].close_codes == [] and reached(top) == []


async def test_no_replica_reachable_refuses_the_handshake() -> None:
    app = create_front_app([dead_url()], dead_url(), None)
    async with running_server(app) as front:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(front.ws_url + "/ws", proxy=None):
                pass
    assert refused.value.response.status_code == 502


@contextlib.asynccontextmanager
async def front_before(
    handler: Callable[[ServerConnection], Awaitable[None]], *, max_size: int | None = None
) -> AsyncIterator[RunningServer]:
    """The front before one gateway that is a plain `websockets` server running `handler`."""
    async with serve(handler, "127.0.0.1", 0, max_size=max_size) as gateway:
        port = next(iter(gateway.sockets)).getsockname()[1]
        app = create_front_app([f"http://127.0.0.1:{port}"], dead_url(), None)
        async with running_server(app) as front:
            yield front


async def closed_by_the_gateway(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code, ws.close_reason


async def test_a_vanished_gateway_closes_the_client_with_1012() -> None:
    """A gateway killed mid-connection (no close frame) tells the client to reconnect."""

    async def vanish(connection: ServerConnection) -> None:
        await connection.send("hello")
        await connection.recv()
        connection.transport.abort()  # as SIGKILL would: no close frame

    async with front_before(vanish) as front, connect(front.ws_url + "/ws", proxy=None) as ws:
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"
        await ws.send("now")
        assert (await closed_by_the_gateway(ws))[0] == 1012


async def test_the_gateways_oversize_close_reaches_the_client_as_sent() -> None:
    """The gateway's own frame limit (smaller than the front's) fails the connection with 1009;
    the client gets that code and the gateway's reason, not the front's 1012."""
    sent: list[tuple[int, str]] = []

    async def limited(connection: ServerConnection) -> None:
        await connection.send("hello")
        with contextlib.suppress(ConnectionClosed):
            await connection.recv()
        await connection.wait_closed()
        close = connection.protocol.close_sent
        if close is not None:
            sent.append((close.code, close.reason))

    async with (
        front_before(limited, max_size=1024) as front,
        connect(front.ws_url + "/ws", proxy=None) as ws,
    ):
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"
        await ws.send("x" * 4096)
        closed = await closed_by_the_gateway(ws)
    assert len(sent) == 1 and sent[0][0] == 1009 and "1024" in sent[0][1]
    assert closed == sent[0]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1009, "frame over GATEWAY_MAX_MESSAGE_BYTES"),
        (1008, "origin not allowed"),
        (1013, "try again later"),
        (4000, "slow consumer"),
        (4999, ""),
    ],
)
async def test_a_gateway_close_reaches_the_client_with_its_code_and_reason(
    code: int, reason: str
) -> None:
    async def closing(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.close(code, reason)

    async with front_before(closing) as front, connect(front.ws_url + "/ws", proxy=None) as ws:
        await ws.send("close now")
        assert await closed_by_the_gateway(ws) == (code, reason)
