"""The gateway's Upstox-compatible way in: authorize, the bearer redirect, the one-time URL.

Owns Upstox's handshake as a tool written for Upstox expects it: `GET AUTHORIZE_PATH` with a
viewer credential as the bearer answers `authorizedRedirectUri`, a single-use URL of this
service; a WebSocket handshake on `FEED_PATH` with the bearer is answered 302 to such a URL (the
SDK's way). The URL's code is random; Redis keeps only its sha256 with the viewer it admits
(`FeedGrant`), for `CODE_SECONDS`, and GETDEL redeems it once on whichever replica the client
reaches. Refusals use Upstox's error envelope (`UDAPI100050`, HTTP 401). The one-time URL carries
a credential-like code: it is never logged.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.access import Admission
from shared import redis_contract as rc
from shared.redis_link import REDIS_ERRORS, guarded
from shared.upstox.envelope import INTERNAL, INVALID_TOKEN, envelope, success
from shared.viewer_access import presented_key
from shared.viewer_tokens import KeyScope, TokenRefused, Viewer

__all__ = [
    "AUTHORIZE_PATH",
    "FEED_PATH",
    "STREAM_PATH",
    "FeedCodes",
    "bearer",
    "code_of",
    "feed_url",
    "refusal_body",
    "router",
]

FEED_PATH: Final = "/v3/feed/market-data-feed"
AUTHORIZE_PATH: Final = FEED_PATH + "/authorize"
STREAM_PATH: Final = FEED_PATH + "/stream"  # the one-time URL's path
CODE_SECONDS: Final = 60
REFUSED_MESSAGE: Final = "Invalid token used to access API"
UNAVAILABLE_MESSAGE: Final = "Service unavailable: try again shortly"
ADMISSION_APP_STATE: Final = "gateway_admission"  # app.state attribute: the viewer access

router = APIRouter()


def refusal_body(message: str = REFUSED_MESSAGE, code: str = INVALID_TOKEN) -> bytes:
    return orjson.dumps(envelope(code, message))


def bearer(authorization: str | None) -> str | None:
    """The bearer credential (Upstox takes it from the header only)."""
    return presented_key("", authorization)


def code_of(query: str) -> str:
    values = parse_qs(query).get("code")
    return values[0] if values else ""


def feed_url(secure: bool, host: str, code: str) -> str:
    return f"{'wss' if secure else 'ws'}://{host}{STREAM_PATH}?code={code}"


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class FeedCodes:
    """One-time feed codes in Redis (see the module docstring)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def issue(self, viewer: Viewer) -> str:
        keys = viewer.keys
        grant = rc.FeedGrant(
            sub=viewer.sub,
            exp=viewer.exp,
            exact=None if keys is None else sorted(keys.exact),
            segments=[] if keys is None else sorted(keys.segments),
        )
        code = secrets.token_urlsafe(24)
        key = rc.upstox_feed_code_key(_digest(code))
        await self._redis.set(key, grant.model_dump_json(), ex=CODE_SECONDS)
        return code

    async def redeem(self, code: str) -> Viewer | None:
        """The viewer the code admits, once; None for a spent, unknown or expired code."""
        if not code or len(code) > 100:
            return None
        stored = await self._redis.getdel(rc.upstox_feed_code_key(_digest(code)))
        if stored is None:
            return None
        grant = rc.FeedGrant.model_validate_json(stored)
        scope = None
        if grant.exact is not None:
            scope = KeyScope(frozenset(grant.exact), frozenset(grant.segments))
        return Viewer(sub=grant.sub, exp=grant.exp, keys=scope)


@router.get(AUTHORIZE_PATH)
async def authorize(request: Request) -> JSONResponse:
    admission: Admission = getattr(request.app.state, ADMISSION_APP_STATE)
    try:
        viewer = await admission.viewers.verify(bearer(request.headers.get("authorization")))
    except TokenRefused:
        return JSONResponse(envelope(INVALID_TOKEN, REFUSED_MESSAGE), status_code=401)
    codes = FeedCodes(request.app.state.hub.broker.redis)
    try:
        code = await guarded(codes.issue(viewer))
    except REDIS_ERRORS:
        return JSONResponse(envelope(INTERNAL, UNAVAILABLE_MESSAGE), status_code=503)
    host = request.headers.get("host") or request.url.netloc
    url = feed_url(request.url.scheme == "https", host, code)
    return JSONResponse(success({"authorized_redirect_uri": url, "authorizedRedirectUri": url}))
