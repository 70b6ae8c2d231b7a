"""The browser-facing WebSocket connection: an asyncio protocol plugged into uvicorn.

uvicorn parses HTTP and hands a WebSocket upgrade to the protocol class configured as `ws=`.
This one speaks RFC 6455 through `websockets`' sans-I/O `ServerProtocol` (handshake, parsing,
masking, control frames, close handshake, the size limit that closes with 1009), and writes the
fan-out's pre-built frames straight to the transport: a write never waits, the transport's
write buffer is the client's backlog, and its high-water mark is the backlog bound.

Measured against Starlette's WebSocket under uvicorn (the ASGI path), this costs about 9 KB per
idle connection instead of 21 KB, and about half the CPU per frame sent (see the README's
benchmark section); it also lets the fan-out skip a task and an await per frame.

The application's HTTP routes stay in FastAPI on the same port; the WebSocket path is `/ws`.
Tools written for Upstox's feed connect on `upstox_feed.FEED_PATH` (answered with a redirect) and
`upstox_feed.STREAM_PATH` (the one-time URL): the same connection then speaks Upstox's protocol
(`wires.UPSTOX`): binary JSON requests with no reply, protobuf frames, refusals on the handshake
in Upstox's envelope.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from services.gateway.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_IDLE,
    CLOSE_POLICY,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    Command,
    Ping,
    ProtocolError,
    RequestId,
    Subscribe,
    error_frame,
    parse_command,
    pong_frame,
)
from services.gateway.security import client_address, peer_trusted, split_forbidden
from services.gateway.upstox_feed import (
    FEED_PATH,
    STREAM_PATH,
    UNAVAILABLE_MESSAGE,
    FeedCodes,
    bearer,
    code_of,
    feed_url,
    refusal_body,
)
from services.gateway.wires import JSON, UPSTOX, Wire
from services.gateway.wsframe import text_frame
from shared.feed_protocol import FeedRequest, RequestError, Subscriptions, parse_request
from shared.hosts import MISDIRECTED, MISDIRECTED_TEXT, handshake_admitted
from shared.origins import origin_allowed
from shared.redis_link import REDIS_ERRORS
from shared.token_bucket import TokenBucket
from shared.upstox.envelope import INTERNAL, INVALID_TOKEN
from shared.viewer_access import presented_key
from shared.viewer_tokens import TokenRefused, Viewer

if TYPE_CHECKING:
    from services.gateway.access import Admission
    from services.gateway.fanout import Subscriber
    from services.gateway.hub import Hub

logger = logging.getLogger(__name__)
# `websockets` reports every connection opened and closed at INFO; with thousands of clients
# that is noise, so its per-connection logger only passes warnings on.
_wire_logger = logging.getLogger(__name__ + ".wire")
_wire_logger.setLevel(logging.WARNING)

WS_PATH: Final = "/ws"
HUB_STATE_KEY: Final = "gateway_hub"  # where the app's lifespan state holds the Hub
ADMISSION_STATE_KEY: Final = "gateway_admission"  # ... and the viewer access and caps


class GatewayConnection(asyncio.Protocol):
    """One client's WebSocket. uvicorn constructs it with (config, server_state, app_state)."""

    # Thousands of these live at once: slots keep each a few hundred bytes smaller.
    __slots__ = (
        "_address",
        "_admission",
        "_behind_timer",
        "_bucket",
        "_close_timer",
        "_commands",
        "_connections",
        "_expiry",
        "_fragmented_binary",
        "_fragments",
        "_hub",
        "_keepalive",
        "_last_rx",
        "_loop",
        "_notices",
        "_open",
        "_sub",
        "_subscriptions",
        "_transport",
        "_viewer",
        "_worker",
        "_ws",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = _loop or asyncio.get_event_loop()
        self._connections: set[Any] = server_state.connections
        self._hub: Hub | None = app_state.get(HUB_STATE_KEY)
        self._admission: Admission | None = app_state.get(ADMISSION_STATE_KEY)
        self._address: str | None = None  # counted against the caps while set
        self._viewer: Viewer | None = None
        self._expiry: asyncio.TimerHandle | None = None
        max_size = self._hub.settings.gateway_max_message_bytes if self._hub else 1024
        self._ws = ServerProtocol(max_size=max_size, logger=_wire_logger)
        self._transport: asyncio.Transport | None = None
        self._sub: Subscriber | None = None
        self._open = False
        self._last_rx = self._loop.time()
        self._bucket: TokenBucket | None = None  # the client's requests
        self._notices: TokenBucket | None = None  # our replies to requests over the rate
        self._fragments: list[bytes] = []  # a text message arriving in several frames
        self._fragmented_binary = False
        self._commands: deque[Command | FeedRequest] | None = None
        self._subscriptions: Subscriptions | None = None  # an Upstox client's keys and modes
        self._worker: asyncio.Task[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._behind_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, so no isinstance check.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._connections.add(self)
        if self._hub is not None:
            settings = self._hub.settings
            transport.set_write_buffer_limits(high=settings.gateway_max_backlog_bytes)
            if settings.gateway_socket_send_buffer_bytes:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(
                        socket.SOL_SOCKET,
                        socket.SO_SNDBUF,
                        settings.gateway_socket_send_buffer_bytes,
                    )

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        if self._open and ws.parser_exc is not None:
            # `websockets` failed the connection (1009 for an oversized frame, 1002...).
            self._open = False
            if ws.close_sent is not None and ws.close_sent.code == CLOSE_TOO_BIG and self._hub:
                self._hub.stats.oversize_closed += 1
        self._write_ws()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._write_ws()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self._connections.discard(self)
        for timer in (self._keepalive, self._behind_timer, self._close_timer, self._expiry):
            if timer is not None:
                timer.cancel()
        self._keepalive = self._behind_timer = self._close_timer = self._expiry = None
        if self._address is not None and self._admission is not None:
            self._admission.caps.release(self._address)
            self._address = None
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if self._sub is not None and self._hub is not None:
            self._hub.unregister(self._sub)
            self._sub = None

    def pause_writing(self) -> None:
        """The write buffer is over the backlog bound: the client is behind."""
        if self._sub is None or self._hub is None:
            return
        self._sub.behind = True
        if self._behind_timer is None:
            self._behind_timer = self._loop.call_later(
                self._hub.settings.gateway_max_backlog_seconds, self._too_slow
            )

    def resume_writing(self) -> None:
        if self._behind_timer is not None:
            self._behind_timer.cancel()
            self._behind_timer = None
        if self._sub is not None and self._hub is not None:
            self._hub.resume(self._sub)

    # ---- the fan-out's sink ----------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        if self._open and self._transport is not None:
            self._transport.write(frame)

    def backlog(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    # ---- uvicorn's shutdown hook -----------------------------------------------------------

    def shutdown(self) -> None:
        if self._open:
            self.close(CLOSE_GOING_AWAY, "server shutting down")
        elif self._transport is not None and self._ws.state is State.CONNECTING:
            self._transport.close()

    # ---- handshake -------------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        ws, hub = self._ws, self._hub
        path, _, query = request.path.partition("?")
        if hub is None:
            response = ws.reject(503, "The gateway is not running (lifespan not started).\n")
        elif not handshake_admitted(hub.settings, request.headers, self._transport):
            response = ws.reject(MISDIRECTED, MISDIRECTED_TEXT)  # a foreign Host: DNS rebinding
        elif path == FEED_PATH and not hub.drain.active:
            self._worker = self._loop.create_task(self._redirect(request))
            return
        elif path not in (WS_PATH, STREAM_PATH):
            response = ws.reject(404, f"No WebSocket endpoint here; connect to {WS_PATH}.\n")
        elif hub.drain.active:
            # Stopping: a 503 the proxy can pass to another replica (a 101 would only be
            # closed again in a moment).
            response = ws.reject(503, "This replica is restarting: connect again.\n")
            response.headers["Retry-After"] = "1"
        else:
            response = ws.accept(request)
        if response.status_code != 101 or hub is None:
            ws.send_response(response)
            if hub is not None:
                reason = "path" if path not in (WS_PATH, STREAM_PATH) else "handshake"
                hub.stats.rejected["draining" if response.status_code == 503 else reason] += 1
            return
        settings = hub.settings
        headers = request.headers
        if not origin_allowed(
            headers.get("Origin"),
            (headers.get("Host"), headers.get("X-Forwarded-Host")),
            settings.gateway_allowed_origins,
        ):
            hub.stats.rejected["origin"] += 1
            self._refuse(response, CLOSE_POLICY, "origin not allowed", None)
            return
        admission = self._admission
        if admission is None:
            self._admit(response, None)
            return
        peer = self._transport.get_extra_info("peername") if self._transport else None
        address = client_address(
            peer[0] if isinstance(peer, tuple) else None,
            headers.get_all("X-Forwarded-For"),
            settings.trusted_proxies,
        )
        over = admission.caps.admit(address)
        if over is not None:
            hub.stats.rejected[over] += 1
            message = "this replica is at its connection cap: try again later"
            if over == "connections_per_address":
                message = "too many connections from this address: try again later"
            error = ProtocolError("too_many_connections", message)
            self._refuse(response, CLOSE_TRY_AGAIN_LATER, "try again later", error)
            return
        self._address = address
        if path == STREAM_PATH:
            self._worker = self._loop.create_task(self._redeem(response, code_of(query)))
            return
        credential = presented_key(query, headers.get("Authorization"), headers.get("Cookie"))
        try:
            viewer = admission.viewers.check(credential)
        except TokenRefused as refused:
            self._unauthorized(response, refused)
            return
        if viewer is None:
            # The identity provider's keys are not cached: the 101 waits for them.
            self._worker = self._loop.create_task(self._verify_then_admit(response, credential))
            return
        self._admit(response, viewer)

    async def _verify_then_admit(self, response: Response, credential: str | None) -> None:
        assert self._admission is not None
        try:
            viewer = await self._admission.viewers.verify(credential)
        except TokenRefused as refused:
            self._worker = None
            self._unauthorized(response, refused)
        else:
            self._worker = None
            self._admit(response, viewer)
        self._write_ws()

    async def _redirect(self, request: Request) -> None:
        """Upstox's bearer handshake: 302 to a fresh one-time URL, or 401 in its envelope."""
        assert self._hub is not None and self._admission is not None
        headers = request.headers
        try:
            viewer = await self._admission.viewers.verify(bearer(headers.get("Authorization")))
            code = await FeedCodes(self._hub.broker.redis).issue(viewer)
        except TokenRefused:
            self._reject_upstox(401, "unauthorized")
        except REDIS_ERRORS:
            self._reject_upstox(503, "redis", UNAVAILABLE_MESSAGE)
        else:
            secure = self._forwarded_secure(headers)
            response = self._ws.reject(302, "")
            response.headers["Location"] = feed_url(secure, headers.get("Host") or "", code)
            self._ws.send_response(response)
        self._worker = None
        self._write_ws()

    def _forwarded_secure(self, headers: Any) -> bool:
        """Whether the client reached us over TLS: a trusted proxy's X-Forwarded-Proto says."""
        assert self._hub is not None
        peer = self._transport.get_extra_info("peername") if self._transport else None
        address = peer[0] if isinstance(peer, tuple) else None
        if not peer_trusted(address, self._hub.settings.trusted_proxies):
            return False
        return str(headers.get("X-Forwarded-Proto", "")).lower() in ("https", "wss")

    async def _redeem(self, response: Response, code: str) -> None:
        """The one-time URL: admit its viewer on Upstox's protocol, or 403 (spent, unknown)."""
        assert self._hub is not None
        try:
            viewer = await FeedCodes(self._hub.broker.redis).redeem(code)
        except REDIS_ERRORS:
            viewer = None
        self._worker = None
        if viewer is None:
            self._reject_upstox(403, "feed_url", "Feed URL already used, unknown or expired")
        else:
            self._admit(response, viewer, UPSTOX)
        self._write_ws()

    def _reject_upstox(self, status: int, reason: str, message: str | None = None) -> None:
        assert self._hub is not None
        self._hub.stats.rejected[reason] += 1
        response = self._ws.reject(status, "")
        code = INTERNAL if status >= 500 else INVALID_TOKEN
        body = refusal_body(code=code) if message is None else refusal_body(message, code)
        response.body = body
        headers = response.headers  # a multi-dict: setting a name adds a second value
        del headers["Content-Length"], headers["Content-Type"]
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = "application/json"
        self._ws.send_response(response)

    def _admit(self, response: Response, viewer: Viewer | None, wire: Wire = JSON) -> None:
        assert self._hub is not None
        self._ws.send_response(response)
        settings = self._hub.settings
        self._open = True
        self._viewer = viewer
        now = self._loop.time()
        self._bucket = TokenBucket(settings.gateway_max_ops_per_second, now)
        self._notices = TokenBucket(settings.gateway_max_ops_per_second, now)
        self._write_ws()  # the 101 response goes out before any frame
        self._sub = self._hub.register(self, wire)
        if wire is UPSTOX:
            self._subscriptions = Subscriptions()
        self._keepalive = self._loop.call_later(
            settings.gateway_ping_interval_seconds, self._keepalive_tick
        )
        if viewer is not None and viewer.exp is not None:
            self._expiry = self._loop.call_later(
                max(0.0, viewer.exp - time.time()), self._token_expired
            )

    def _unauthorized(self, response: Response, refused: TokenRefused) -> None:
        assert self._hub is not None
        self._hub.stats.rejected["unauthorized"] += 1
        error = ProtocolError("unauthorized", refused.message)
        self._refuse(response, CLOSE_POLICY, "unauthorized", error)

    def _refuse(
        self, response: Response, code: int, reason: str, error: ProtocolError | None
    ) -> None:
        """Accept, then close at once with `code` (a browser sees the code and the reason,
        which a refused HTTP handshake would not show it), after an error frame saying why."""
        self._ws.send_response(response)
        self._open = True
        if error is not None:
            self._write_ws()
            self.send_frame(text_frame(error.frame()))
        self.close(code, reason)

    def _token_expired(self) -> None:
        """The credential's `exp` has come: a client that wants to go on signs in again."""
        self._expiry = None
        if self._open:
            if self._subscriptions is None:  # Upstox's protocol has no error frames
                self.send_frame(
                    text_frame(error_frame("token_expired", "the token has expired: get a new one"))
                )
            self.close(CLOSE_TOKEN_EXPIRED, "token expired")

    # ---- frames from the client ------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            if opcode is not Opcode.CONT:
                self._fragmented_binary = opcode is Opcode.BINARY
            if not frame.fin:
                if not self._fragmented_binary:
                    self._fragments.append(bytes(frame.data))
                return
            data = bytes(frame.data)
            if self._fragments:
                data = b"".join([*self._fragments, data])
                self._fragments = []
            self._on_message(data, binary=self._fragmented_binary)
        elif opcode is Opcode.CLOSE:
            self._open = False
        # PING is answered by `websockets`; PONG only needs to count as activity.

    def _on_message(self, data: bytes, *, binary: bool) -> None:
        if not self._open or self._sub is None or self._hub is None or self._bucket is None:
            return
        now = self._loop.time()
        if self._subscriptions is not None:
            self._on_upstox_request(data, now)
            return
        if not self._bucket.take(now):
            self._refuse_over_rate(data, now)
            return
        if binary:
            self._reply_error(
                ProtocolError("bad_request", "binary frames are not supported: send JSON text")
            )
            return
        try:
            command = parse_command(data, self._hub.settings.gateway_max_keys_per_client)
        except ProtocolError as error:
            self._reply_error(error)
            return
        if isinstance(command, Ping) and self._commands is None:
            self._hub.send(self._sub, pong_frame(command.request_id))
            return
        self._queue(command)

    def _queue(self, command: Command | FeedRequest) -> None:
        if self._commands is None:
            self._commands = deque()
        self._commands.append(command)
        if self._worker is None:
            self._worker = self._loop.create_task(self._run_commands())

    def _on_upstox_request(self, data: bytes, now: float) -> None:
        """Upstox answers no request: a malformed one, or one over the rate, is dropped."""
        assert self._bucket is not None
        if not self._bucket.take(now):
            return
        try:
            request = parse_request(data)
        except RequestError as error:
            logger.debug("ignoring a malformed Upstox-protocol request: %s", error)
            return
        self._queue(request)

    def _refuse_over_rate(self, data: bytes, now: float) -> None:
        """Tell the client which request was dropped (its id and keys, so it can send it again
        later), at most at the request rate itself: a flooding client is not flooded back."""
        assert self._hub is not None and self._notices is not None
        if not self._notices.take(now):
            return
        limit = self._hub.settings.gateway_max_ops_per_second
        request_id: RequestId = None
        keys: tuple[str, ...] = ()
        try:
            command = parse_command(data, self._hub.settings.gateway_max_keys_per_client)
            request_id = command.request_id
            keys = getattr(command, "keys", None) or ()
        except ProtocolError as error:
            request_id = error.request_id
        self._reply_error(
            ProtocolError(
                "rate_limited",
                f"over {limit:g} requests per second: this request was dropped; send it again",
                request_id=request_id,
                keys=keys,
            )
        )

    def _reply_error(self, error: ProtocolError) -> None:
        if self._sub is not None and self._hub is not None:
            self._hub.send_error(self._sub, error)

    async def _run_commands(self) -> None:
        """Carry out this client's requests one at a time, in order; exits when idle so an
        idle connection holds no task."""
        try:
            while self._commands and self._sub is not None and self._hub is not None:
                command = self._commands.popleft()
                if isinstance(command, FeedRequest):
                    assert self._subscriptions is not None
                    viewer = self._viewer
                    allows = None if viewer is None or viewer.keys is None else viewer.allows
                    await self._hub.handle_upstox(self._sub, self._subscriptions, command, allows)
                    continue
                if isinstance(command, Subscribe):
                    screened = self._screen(command)
                    if screened is None:
                        continue
                    command = screened
                try:
                    await self._hub.handle(self._sub, command)
                except Exception:
                    logger.exception("request failed")
                    if self._sub is not None:
                        self._hub.send(
                            self._sub,
                            error_frame("bad_request", "internal error while handling the request"),
                        )
        finally:
            self._worker = None
            self._commands = None

    def _screen(self, command: Subscribe) -> Subscribe | None:
        """The subscribe less the keys the viewer's token does not allow (refused first, with
        `forbidden_key`); None when nothing is left to do."""
        if self._viewer is None or self._viewer.keys is None:
            return command
        allowed, error = split_forbidden(command, self._viewer.keys)
        if error is not None:
            self._reply_error(error)
        return allowed

    # ---- keepalive, slow clients, closing --------------------------------------------------

    def _keepalive_tick(self) -> None:
        self._keepalive = None
        if not self._open or self._hub is None:
            return
        settings = self._hub.settings
        if self._loop.time() - self._last_rx > settings.gateway_idle_timeout_seconds:
            self._hub.stats.idle_dropped += 1
            self.close(CLOSE_IDLE, "idle timeout")
            return
        self._ws.send_ping(secrets.token_bytes(4))
        self._write_ws()
        self._keepalive = self._loop.call_later(
            settings.gateway_ping_interval_seconds, self._keepalive_tick
        )

    def _too_slow(self) -> None:
        self._behind_timer = None
        if self._open and self._hub is not None and self._sub is not None and self._sub.behind:
            self._hub.stats.slow_dropped += 1
            logger.info("closing a slow consumer (backlog over its bound for too long)")
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection is dropped if it does not finish."""
        if not self._open or self._transport is None:
            return
        self._open = False
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, reason)
        self._write_ws()
        self._abort_later()

    def _abort_later(self) -> None:
        """Drop the TCP connection if the client has not finished closing in time."""
        if self._hub is not None and self._close_timer is None and self._transport is not None:
            self._close_timer = self._loop.call_later(
                self._hub.settings.gateway_close_timeout_seconds, self._transport.abort
            )

    def _write_ws(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif not transport.is_closing():
                self._end_stream(transport)

    def _end_stream(self, transport: asyncio.Transport) -> None:
        """Half-close (FIN once the buffer is flushed) and let the client close. Closing a
        socket with unread input sends a TCP reset instead, and a reset can overtake the close
        frame still in flight: a client cut off mid-message (1009) then saw the connection
        reset, or, through a proxy, 1012. Input that still arrives is discarded."""
        if transport.can_write_eof():
            transport.write_eof()
            self._abort_later()
        else:
            transport.close()
