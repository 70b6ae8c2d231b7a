"""The feed's front door: authorize, the bearer redirect, and the one-time WebSocket URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextvars import ContextVar
from typing import Annotated, Final
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.requests import HTTPConnection

from services.simulator.accounts import FEED_CODE_LIFETIME_MS, FeedGrant, TokenRecord
from services.simulator.clock import now_ms
from services.simulator.errors import (
    CONNECTION_LIMIT,
    EXTENDED_TOKEN_NOT_PERMITTED,
    FEED_URL_USED,
    EnvelopeError,
    envelope,
    error_response,
    invalid_token,
)
from services.simulator.feed import CloseRequest, ConnectionLimitError, FeedConnection, FeedHub
from services.simulator.state import SimulatorState, authenticate, require_user, state_of

logger = logging.getLogger(__name__)
router = APIRouter()

# uvicorn's sans-I/O WebSocket protocol logs "returned without completing handshake" after a
# deliberate denial response (our 302/401/403). The flag is set in the connection's own task,
# which is where uvicorn logs, so only those spurious records are dropped.
_DENIED: ContextVar[bool] = ContextVar("simulator_handshake_denied", default=False)
_SPURIOUS = "ASGI callable returned without completing handshake."


class _FeedLogFilter(logging.Filter):
    """Keeps uvicorn's WebSocket lines free of one-time codes, and drops the spurious line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _DENIED.get() and record.msg == _SPURIOUS:
            return False
        if isinstance(record.msg, str) and '"WebSocket %s"' in record.msg and record.args:
            args = tuple(record.args) if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and "?" in arg else arg for arg in args
            )
        return True


def install_log_filter() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _FeedLogFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_FeedLogFilter())


async def _deny(websocket: WebSocket, response: Response) -> None:
    _DENIED.set(True)
    await websocket.send_denial_response(response)


FEED_PATH: Final = "/v3/feed/market-data-feed"
AUTHORIZE_PATH: Final = "/v3/feed/market-data-feed/authorize"
ONE_TIME_PATH: Final = "/market-data-feeder/v3/upstox-developer-api/feeds"


def _base_url(connection: HTTPConnection, sim: SimulatorState) -> str:
    configured = sim.settings.simulator_public_url
    if configured:
        parts = urlsplit(configured.rstrip("/"))
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}{parts.path}"
    secure = connection.url.scheme in ("https", "wss")
    host = connection.headers.get("host") or f"{connection.url.hostname}:{connection.url.port}"
    return f"{'wss' if secure else 'ws'}://{host}"


def issue_feed_url(connection: HTTPConnection, token: str, record: TokenRecord) -> str:
    """A fresh single-use feed URL (it carries a one-time code: never log it)."""
    sim = state_of(connection)
    if record.extended:
        raise EnvelopeError(
            401,
            EXTENDED_TOKEN_NOT_PERMITTED,
            "The API you are trying to access is not permitted with an extended_token",
        )
    code = sim.feed_codes.issue(FeedGrant(record.user, token, now_ms() + FEED_CODE_LIFETIME_MS))
    query = urlencode({"requestId": str(uuid.uuid4()), "code": code})
    return f"{_base_url(connection, sim)}{ONE_TIME_PATH}?{query}"


@router.get(AUTHORIZE_PATH)
async def authorize(
    request: Request, auth: Annotated[tuple[str, TokenRecord], Depends(require_user)]
) -> JSONResponse:
    url = issue_feed_url(request, *auth)
    data = {"authorized_redirect_uri": url, "authorizedRedirectUri": url}
    return JSONResponse({"status": "success", "data": data})


@router.get(FEED_PATH)
async def feed_over_http(request: Request) -> Response:
    """A plain HTTP client asking for the feed gets what a WebSocket client gets: the redirect."""
    found = authenticate(request)
    if found is None:
        raise invalid_token()
    return Response(status_code=302, headers={"location": issue_feed_url(request, *found)})


@router.websocket(FEED_PATH)
async def feed_with_bearer(websocket: WebSocket) -> None:
    """Upstox's direct way in: a handshake with a bearer header is redirected (302) to a fresh
    one-time URL; a bad token gets HTTP 401 on the handshake."""
    found = authenticate(websocket)
    if found is None:
        await _deny(
            websocket, error_response(401, "UDAPI100050", "Invalid token used to access API")
        )
        return
    try:
        url = issue_feed_url(websocket, *found)
    except EnvelopeError as error:
        await _deny(websocket, error_response(error.status, error.code, error.message))
        return
    await _deny(websocket, Response(status_code=302, headers={"location": url}))


@router.websocket(ONE_TIME_PATH)
async def feed(websocket: WebSocket) -> None:
    sim = state_of(websocket)
    grant = sim.feed_codes.take(websocket.query_params.get("code", ""), now_ms())
    if grant is None or sim.tokens.resolve(grant.token, now_ms()) is None:
        reason = "feed URL already used, unknown or expired" if grant is None else "token expired"
        status = 403 if grant is None else 401
        code = FEED_URL_USED if grant is None else "UDAPI100050"
        await _deny(websocket, JSONResponse(envelope(code, reason), status))
        return
    try:
        conn = sim.hub.register(grant.user, grant.token)
    except ConnectionLimitError:
        await _deny(
            websocket,
            error_response(403, CONNECTION_LIMIT, "Too many feed connections for this user"),
        )
        return
    try:
        await websocket.accept()
        logger.info("feed connection %d opened for %s", conn.id, grant.user.user_id)
        await _serve(websocket, sim.hub, conn)
    finally:
        sim.hub.unregister(conn)
        logger.info("feed connection %d closed", conn.id)


async def _serve(websocket: WebSocket, hub: FeedHub, conn: FeedConnection) -> None:
    sender = asyncio.create_task(_send_loop(websocket, hub, conn))
    receiver = asyncio.create_task(_receive_loop(websocket, hub, conn))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        for task in (sender, receiver):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _send_loop(websocket: WebSocket, hub: FeedHub, conn: FeedConnection) -> None:
    while True:
        await conn.wakeup.wait()
        conn.wakeup.clear()
        while conn.outbox:
            item = conn.outbox.popleft()
            if isinstance(item, CloseRequest):
                await websocket.close(item.code, item.reason)
                return
            await websocket.send_bytes(item)
            conn.frames_sent += 1
            hub.frames_total += 1


async def _receive_loop(websocket: WebSocket, hub: FeedHub, conn: FeedConnection) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            data = message.get("text")
        if data is not None:
            hub.handle_request(conn, data)
