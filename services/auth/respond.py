"""Answering a browser with a page and a program with JSON, from the same handler; the headers
every answer carries."""

from __future__ import annotations

from typing import Final

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.auth.pages import error_page
from shared.framing import NoFraming

# Login responses carry one-time values in their URLs: never cache them, never leak them on.
NO_STORE: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

# No page of auth may be framed (`shared.framing`; auth applies it itself too, so its tests
# and any server of the app get it).
__all__ = ["NO_STORE", "NoFraming", "prefers_html", "prefers_json", "problem"]


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
