"""Viewers over HTTP at the gateway: the guard in front of the dashboard page and /api/* (the
shared `ViewerGuard`, with the page added), and the sign-in page that keeps a viewer token in an
HttpOnly cookie for the dashboard (Path=/, so the recorder's /api/* behind the same edge gets it
too).

Static assets, /signin, /healthz, /readyz and /metrics stay open (the edge keeps /metrics
inside). A refused page request goes to /signin; a refused API request gets 401 JSON saying why
(never echoing the credential).
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from typing import Final, get_args
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from shared.origins import origin_allowed
from shared.viewer_access import VIEWER_COOKIE, ViewerAccess
from shared.viewer_guard import ViewerGuard
from shared.viewer_tokens import MAX_TOKEN_LENGTH, Reason, TokenRefused

SIGNIN_PATH: Final = "/signin"
KEYED_API_PREFIXES: Final = ("/api/history/", "/api/candles/")  # routes that name a key
MAX_FORM_BYTES: Final = 2 * MAX_TOKEN_LENGTH
MAX_NEXT_LENGTH: Final = 512
# Where sign-in may return: a path on this site; no `//host`, backslash, space or control
# character a browser would turn into another host.
_LOCAL_PATH: Final = re.compile(r"/(?![/\\])[!-\[\]-~]*")
# A refused cookie's reason travels to the page as `why`: only these names are shown.
_SHOWN_REASONS: Final[dict[str, Reason]] = {
    reason: reason for reason in get_args(Reason) if reason != "missing"
}


def local_next(value: str | None) -> str:
    """`value` when it is a bounded path on this site, else `/`."""
    if value and len(value) <= MAX_NEXT_LENGTH and _LOCAL_PATH.fullmatch(value):
        return value
    return "/"


class DashboardGuard(ViewerGuard):
    """The shared guard on /api/* (keys checked on /api/history/ and /api/candles/), and on the
    dashboard page too: a refused page request goes to the sign-in page, not a 401."""

    def __init__(self, app: ASGIApp, access: ViewerAccess) -> None:
        super().__init__(app, access, KEYED_API_PREFIXES)

    def guards(self, path: str) -> bool:
        return path == "/" or super().guards(path)

    def refusal(self, path: str, query: str, refused: TokenRefused) -> Response:
        if path.startswith("/api/"):
            return super().refusal(path, query, refused)
        back = path + ("?" + query if query else "")
        params = {"next": back}
        if refused.reason != "missing":
            params["why"] = refused.reason
        return RedirectResponse(f"{SIGNIN_PATH}?{urlencode(params, quote_via=quote)}", 303)


def add_signin_routes(app: FastAPI, access: ViewerAccess, template: Path) -> None:
    """GET/POST /signin and POST /signout."""

    def page(next_url: str, message: str = "", status: int = 200) -> HTMLResponse:
        text = template.read_text(encoding="utf-8")
        text = text.replace("{{next}}", html.escape(next_url, quote=True))
        text = text.replace("{{message}}", html.escape(message))
        text = text.replace("{{message_hidden}}", "" if message else " hidden")
        return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

    @app.get(SIGNIN_PATH, include_in_schema=False)
    async def signin_page(next: str | None = None, why: str | None = None) -> Response:
        message = ""
        if why in _SHOWN_REASONS:
            message = TokenRefused(_SHOWN_REASONS[why]).message
        return page(local_next(next), message)

    @app.post(SIGNIN_PATH, include_in_schema=False)
    async def signin(request: Request) -> Response:
        if not _same_site(request):
            return _cross_site()
        form = await _form(request)
        if form is None:
            return page("/", "the form is too large", 413)
        next_url = local_next(form.get("next"))
        if not access.required:
            return RedirectResponse(next_url, 303)
        token = (form.get("token") or "").strip()
        try:
            viewer = await access.verify(token)
        except TokenRefused as refused:
            return page(next_url, refused.message, 401)
        response = RedirectResponse(next_url, 303)
        max_age = None if viewer.exp is None else max(1, int(viewer.exp - time.time()))
        response.set_cookie(
            VIEWER_COOKIE,
            token,
            max_age=max_age,  # None (an API key): until the browser closes
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        if not _same_site(request):
            return _cross_site()
        response = RedirectResponse(SIGNIN_PATH, 303)
        response.delete_cookie(
            VIEWER_COOKIE,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response


def _same_site(request: Request) -> bool:
    """A form post from a page of this site: browsers always send Origin on a POST, and a
    foreign page (login CSRF: signing the victim in as someone else) cannot forge it."""
    origin = request.headers.get("origin")
    hosts = (request.headers.get("host"), request.headers.get("x-forwarded-host"))
    return origin is not None and origin_allowed(origin, hosts, ())


def _cross_site() -> Response:
    return JSONResponse(
        {"error": "cross_site", "message": "sign-in is only accepted from this site's own page"},
        status_code=403,
    )


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form, or None when it is larger than any token."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:
        return None
    return {name: values[0] for name, values in fields.items()}
