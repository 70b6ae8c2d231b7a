"""Answering a browser with a page and a program with JSON, from the same handler; the headers
every answer carries."""

from __future__ import annotations

from typing import Final

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.auth.pages import error_page

# Login responses carry one-time values in their URLs: never cache them, never leak them on.
NO_STORE: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

# No page of auth may be framed: a decoy page over a framed "Log out" gets the user's click.
# X-Frame-Options for browsers that predate CSP's frame-ancestors.
NO_FRAMING: Final = (
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
)


class NoFraming:
    """Adds `NO_FRAMING` to every HTTP answer, errors and redirects included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *NO_FRAMING]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def prefers_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def prefers_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def problem(request: Request, status: int, reason: str, detail: str, title: str) -> Response:
    """A 4xx/5xx answer: `{"error": reason, "detail": ...}` or an HTML page saying the same."""
    if prefers_html(request):
        return HTMLResponse(error_page(title, detail), status_code=status, headers=NO_STORE)
    return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=NO_STORE)
