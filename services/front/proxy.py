"""The front as an ASGI app: HTTP through httpx, WebSocket through a websockets client.

Each new HTTP request or WebSocket connection for the gateways goes to the next replica in
round-robin order; a replica that refuses the connection is skipped for that request, so when
one is killed its clients reconnect through the front to another; so is one that answers a
WebSocket handshake 503 (it is draining before a stop), unless it is the last one to try.
Bodies are streamed both ways, redirects are passed to the browser (never followed), and close
codes cross the proxy as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import quote, urlsplit

import httpx
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Origin, Subprotocol

from services.front.routes import (
    HEALTH_PATH,
    ClientInfo,
    Refusal,
    Target,
    Upstream,
    admit,
    end_to_end,
    header,
    relay_close_to_client,
    relay_close_to_upstream,
    request_headers,
    rewrite_location,
    websocket_request_headers,
)

__all__ = ["HEALTH_PATH", "FrontApp", "RoundRobin", "create_front_app"]

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=10.0)
WS_OPEN_TIMEOUT = 10.0
# The gateway enforces the real frame limit; the front only guards against the absurd.
WS_MAX_SIZE = 64 * 1024 * 1024

_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class RoundRobin:
    """Pure: the order in which to try replicas for each new connection."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._next = 0

    def order(self) -> list[str]:
        start = self._next
        self._next = (start + 1) % len(self.urls)
        return self.urls[start:] + self.urls[:start]


class _ReplicaStates:
    """Logs a replica going down or coming back once, not once per request."""

    def __init__(self) -> None:
        self._down: set[str] = set()

    def refused(self, url: str, error: BaseException) -> None:
        if url not in self._down:
            self._down.add(url)
            logger.warning(
                "%s refused the connection (%s); trying the next", url, type(error).__name__
            )

    def reached(self, url: str) -> None:
        if url in self._down:
            self._down.discard(url)
            logger.info("%s is reachable again", url)


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class _RequestBody:
    """The client's request body as an async stream, remembering whether reading began.

    A replica that refused the connection never saw a byte, so the request can go to the next
    one as long as reading has not begun.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body: bytes = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return


def _client_info(scope: Scope) -> ClientInfo:
    client = scope.get("client")
    scheme: str = scope.get("scheme") or "http"
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    host = header(scope["headers"], b"host")
    return ClientInfo(
        address=client[0] if client else None,
        scheme=scheme,
        host=host.decode("latin-1") if host else None,
    )


def _raw_path(scope: Scope) -> str:
    raw: bytes | None = scope.get("raw_path")
    return raw.decode("latin-1") if raw is not None else quote(scope["path"])


def _upstream_target(scope: Scope, target: Target) -> str:
    """Path and query for the upstream, keeping the client's percent-encoding."""
    text = _raw_path(scope)
    if target.stripped:
        # `/auth/...`: the prefix goes from the raw path too (it is plain ASCII in both forms),
        # unless the raw path spells it otherwise (`/auth%2Fx`): then the decoded path, quoted.
        prefix = target.stripped
        plain = text == prefix or text.startswith(prefix + "/")
        text = (text[len(prefix) :] or "/") if plain else quote(target.path)
    query: bytes = scope.get("query_string", b"")
    return text + ("?" + query.decode("latin-1") if query else "")


def _has_body(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    length = header(headers, b"content-length")
    return header(headers, b"transfer-encoding") is not None or (
        length is not None and length.strip() != b"0"
    )


def _text_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]


async def _plain_response(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _text_headers(body),
        }
    )
    await send({"type": "http.response.body", "body": body})


class FrontApp:
    """The ASGI app. Build it with `create_front_app`."""

    def __init__(
        self,
        gateway_urls: Sequence[str],
        auth_url: str,
        simulator_url: str | None,
        recorder_url: str | None = None,
    ) -> None:
        self.gateways = RoundRobin(gateway_urls)
        self.auth_url = auth_url.rstrip("/")
        self.simulator_url = simulator_url.rstrip("/") if simulator_url else None
        self.recorder_url = recorder_url.rstrip("/") if recorder_url else None
        self._states = _ReplicaStates()
        self._client: httpx.AsyncClient | None = None

    # ---- plumbing ------------------------------------------------------------------------

    def _candidates(self, upstream: Upstream) -> list[str]:
        if upstream is Upstream.AUTH:
            return [self.auth_url]
        if upstream is Upstream.SIMULATOR and self.simulator_url:
            return [self.simulator_url]
        if upstream is Upstream.RECORDER and self.recorder_url:
            return [self.recorder_url]
        return self.gateways.order()

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: every upstream is local; a proxy from the environment must not
            # intercept them. A cookie jar that keeps nothing: the client is shared by every
            # browser, so a Set-Cookie it kept (the operator's session) would go out with
            # everyone's requests; cookies pass through as headers, each browser its own.
            self._client = httpx.AsyncClient(
                timeout=HTTP_TIMEOUT,
                follow_redirects=False,
                trust_env=False,
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _admit(self, scope: Scope) -> Target | Refusal:
        return admit(
            _raw_path(scope),
            scope["path"],
            has_simulator=self.simulator_url is not None,
            has_recorder=self.recorder_url is not None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- HTTP ----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == HEALTH_PATH:
            await _plain_response(send, 200, "ok")
            return
        target = self._admit(scope)
        if isinstance(target, Refusal):
            await _plain_response(send, target.status, target.text)
            return
        info = _client_info(scope)
        headers = request_headers(scope["headers"], info)
        body = _RequestBody(receive) if _has_body(scope["headers"]) else None
        client = self._http_client()
        for base in self._candidates(target.upstream):
            request = client.build_request(
                scope["method"],
                base + _upstream_target(scope, target),
                headers=headers,
                content=body,
            )
            try:
                response = await client.send(request, stream=True)
            except _CONNECT_ERRORS as error:
                self._states.refused(base, error)
                if body is not None and body.started:
                    break
                continue
            except _ClientGone:
                return
            except httpx.TimeoutException:
                await _plain_response(send, 504, f"{target.upstream.value} did not answer in time")
                return
            except httpx.HTTPError as error:
                logger.warning("%s failed: %s", base, type(error).__name__)
                await _plain_response(send, 502, f"{target.upstream.value} failed to answer")
                return
            self._states.reached(base)
            front_base = f"{info.scheme}://{info.host}" if info.host else ""
            await self._relay_response(response, send, base, front_base)
            return
        await _plain_response(send, 502, f"no {target.upstream.value} is reachable")

    async def _relay_response(
        self, response: httpx.Response, send: Send, base: str, front_base: str
    ) -> None:
        try:
            headers = end_to_end(response.headers.raw)
            if front_base:
                headers = [
                    (name, rewrite_location(value, base, front_base))
                    if name.lower() == b"location"
                    else (name, value)
                    for name, value in headers
                ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as error:
                # Too late for an error status: leaving the response incomplete makes the server
                # drop the connection, so the client sees a truncated body rather than a short one.
                logger.warning("%s broke off a response: %s", base, type(error).__name__)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    # ---- WebSocket -----------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        target = self._admit(scope)
        if isinstance(target, Refusal):
            await _deny(scope, send, target.status, (target.text + "\n").encode())
            return
        upstream = await self._open_upstream(scope, send, target)
        if upstream is None:
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            await self._pump(upstream, receive, send)
        finally:
            await upstream.close()

    async def _open_upstream(
        self, scope: Scope, send: Send, target: Target
    ) -> ClientConnection | None:
        """Connect to the first replica that takes the connection; deny the client otherwise."""
        info = _client_info(scope)
        headers = websocket_request_headers(scope["headers"], info)
        origin = header(scope["headers"], b"origin")
        subprotocols = [Subprotocol(name) for name in scope.get("subprotocols") or []]
        handshake = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        candidates = self._candidates(target.upstream)
        for base in candidates:
            address = urlsplit(base)
            # The URI names the host the client asked for (websockets sends it as `Host`, like
            # nginx's `Host $http_host`, so the gateway's same-origin check sees the front's
            # origin); host= and port= say where the TCP connection really goes.
            url = _websocket_uri(info.host or address.netloc) + _upstream_target(scope, target)
            try:
                upstream = await connect(
                    url,
                    host=address.hostname,
                    port=address.port or 80,
                    additional_headers=handshake,
                    origin=Origin(origin.decode("latin-1")) if origin else None,
                    subprotocols=subprotocols or None,
                    user_agent_header=None,  # the client's own User-Agent is forwarded
                    compression=None,
                    max_size=WS_MAX_SIZE,
                    open_timeout=WS_OPEN_TIMEOUT,
                    proxy=None,
                )
            except OSError as error:  # refused, unreachable, or no answer in time
                self._states.refused(base, error)
                continue
            except InvalidStatus as error:
                self._states.reached(base)
                response = error.response
                if response.status_code == 503 and base != candidates[-1]:
                    continue  # a draining replica (rolling restart): the next one takes it
                await _deny(scope, send, response.status_code, bytes(response.body or b""))
                return None
            except (InvalidHandshake, InvalidURI) as error:
                logger.warning("%s failed the WebSocket handshake: %s", base, type(error).__name__)
                await _deny(scope, send, 502, b"bad gateway\n")
                return None
            self._states.reached(base)
            return upstream
        await _deny(scope, send, 502, f"no {target.upstream.value} is reachable\n".encode())
        return None

    async def _pump(self, upstream: ClientConnection, receive: Receive, send: Send) -> None:
        to_upstream = asyncio.create_task(_client_to_upstream(upstream, receive))
        to_client = asyncio.create_task(_upstream_to_client(upstream, send))
        try:
            await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_upstream, to_client):
                task.cancel()
            outcomes = await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        for outcome in outcomes:
            # The other side went away while one leg was still talking: the normal end of a
            # relay, not an error of the front's.
            if isinstance(outcome, ConnectionClosed | OSError):
                logger.debug("relay ended: %s", type(outcome).__name__)
            elif isinstance(outcome, Exception):
                logger.warning("relay failed", exc_info=outcome)


async def _client_to_upstream(upstream: ClientConnection, receive: Receive) -> None:
    """Forward the client's messages until it disconnects, then close upstream with its code."""
    while True:
        message: Message = await receive()
        if message["type"] == "websocket.receive":
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            # Upstream already closed: its close reaches the client through the other task.
            with contextlib.suppress(ConnectionClosed):
                await upstream.send(data)
        elif message["type"] == "websocket.disconnect":
            code = relay_close_to_upstream(message.get("code"))
            await upstream.close(code, message.get("reason") or "")
            return


async def _upstream_to_client(upstream: ClientConnection, send: Send) -> None:
    """Forward upstream's messages until it closes, then close the client with its code."""
    with contextlib.suppress(ConnectionClosed):
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    await upstream.wait_closed()
    await send(
        {
            "type": "websocket.close",
            "code": relay_close_to_client(upstream.close_code),
            "reason": upstream.close_reason or "",
        }
    )


def _websocket_uri(host: str) -> str:
    """`ws://host`, for a Host header value; a value that is no host name falls back safely."""
    if not host or any(c in host for c in "/?#@ \t\\"):
        return "ws://invalid-host"
    return "ws://" + host


async def _deny(scope: Scope, send: Send, status: int, body: bytes) -> None:
    """Refuse the client's handshake with `status`, as the upstream (or the front) answered."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": _text_headers(body),
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011})


def create_front_app(
    gateway_urls: list[str],
    auth_url: str,
    simulator_url: str | None = None,
    recorder_url: str | None = None,
) -> FrontApp:
    """The front for these upstreams (base URLs like `http://127.0.0.1:8000`)."""
    return FrontApp(gateway_urls, auth_url, simulator_url, recorder_url)
