"""The viewer guard over HTTP, shared by the services that answer viewers' /api/* requests (the
gateway, the recorder): it asks for the viewer's credential when viewers need one, and refuses
a key outside the token's `keys` claim on the routes that name a key in their path.

Each service names its own keyed routes (`keyed_prefixes`); a service with pages (the gateway's
dashboard) subclasses the guard to guard them too and send a refused browser to its sign-in
page. Here a refusal is JSON: 401 saying why (never echoing the credential), or 403
`forbidden_key`; `over_rate` is the 429 of a viewer's per-minute query limits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.token_bucket import BucketTable
from shared.viewer_access import ViewerAccess, presented_key
from shared.viewer_tokens import TokenRefused


class ViewerGuard:
    """Asks the viewer's credential on every /api/* route (when viewers need one), and refuses
    keys outside the token's `keys` claim on routes under `keyed_prefixes` (the rest of the
    path is the key). The admitted `Viewer` is left in the request's state as `viewer`."""

    def __init__(self, app: ASGIApp, access: ViewerAccess, keyed_prefixes: Sequence[str]) -> None:
        self.app = app
        self.access = access
        self.keyed_prefixes = tuple(keyed_prefixes)

    def guards(self, path: str) -> bool:
        return path.startswith("/api/")

    def refusal(self, path: str, query: str, refused: TokenRefused) -> Response:
        """The answer to a request whose credential is missing or refused."""
        return unauthorized(refused)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not self.guards(path) or not self.access.required:
            # Open mode leaves no viewer in the state: who a request is, is then its address.
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = scope.get("query_string", b"").decode("latin-1")
        credential = presented_key(query, headers.get("authorization"), headers.get("cookie"))
        try:
            viewer = await self.access.verify(credential)
        except TokenRefused as refused:
            await self.refusal(path, query, refused)(scope, receive, send)
            return
        key = self.key_named(path)
        if key is not None and not viewer.allows(key):
            await forbidden_key(key)(scope, receive, send)
            return
        scope.setdefault("state", {})["viewer"] = viewer
        await self.app(scope, receive, send)

    def key_named(self, path: str) -> str | None:
        for prefix in self.keyed_prefixes:
            if path.startswith(prefix):
                return path[len(prefix) :]
        return None


def unauthorized(refused: TokenRefused) -> Response:
    return JSONResponse(
        {"error": "unauthorized", "reason": refused.reason, "message": refused.message},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden_key(key: str) -> Response:
    return JSONResponse(
        {"error": "forbidden_key", "message": "your token does not allow this key", "keys": [key]},
        status_code=403,
    )


def viewer_of(state: Any, client: str | None) -> str:
    """Who a request is counted under (rate limits): the viewer its token names (`sub`), else
    its client address (forwarded-for only from TRUSTED_PROXIES, as `shared.serve` serves it)."""
    viewer = getattr(state, "viewer", None)
    subject = getattr(viewer, "sub", None)
    if isinstance(subject, str) and subject:
        return "viewer:" + subject
    return "address:" + (client or "unknown")


def over_rate(limits: BucketTable, request: Request, message: str) -> JSONResponse | None:
    """None while the request's viewer (`viewer_of`) has a token left in `limits` (one is
    spent); else 429 `rate_limited` saying `message`, with Retry-After."""
    client = request.client.host if request.client else None
    wait = limits.take(viewer_of(request.state, client), time.monotonic())
    if not wait:
        return None
    response = JSONResponse({"error": "rate_limited", "message": message}, status_code=429)
    response.headers["Retry-After"] = str(wait)
    return response
