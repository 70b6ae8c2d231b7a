"""Who may act on auth: the operator's cookie read into a session, the answer to anyone else,
and the CSRF check of every state-changing request (policy in `csrf.py`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from services.auth import csrf
from services.auth.context import AuthContext
from services.auth.operator import COOKIE
from services.auth.respond import NO_STORE, prefers_html
from shared.redis_contract import OperatorSession

__all__ = [
    "Operator",
    "body_fields",
    "csrf_refusal",
    "current_operator",
    "operator_acting",
    "operator_required",
    "origin_refusal",
]

logger = logging.getLogger(__name__)

# auth's home page at the public origin (the front and nginx serve auth's `/` at `/auth/`):
# where a browser without the operator's cookie is sent to sign in.
SIGN_IN_PAGE: Final = "/auth/"
_MAX_BODY: Final = 4096


@dataclass(frozen=True)
class Operator:
    """The signed-in operator of this request: the cookie's value and its session."""

    session_id: str
    session: OperatorSession


async def current_operator(request: Request, context: AuthContext) -> Operator | None:
    session_id = request.cookies.get(COOKIE)
    session = await context.operators.read(session_id)
    if session is None or session_id is None:
        return None
    return Operator(session_id, session)


def operator_required(request: Request) -> Response:
    """401 for a program; a browser is sent to the sign-in page."""
    if prefers_html(request):
        return RedirectResponse(SIGN_IN_PAGE, status_code=303, headers=NO_STORE)
    body = {"error": "operator_required", "detail": "sign in as the operator first"}
    return JSONResponse(body, status_code=401, headers=NO_STORE)


async def body_fields(request: Request) -> dict[str, str]:
    """The string fields of a small JSON or form body (none for anything else)."""
    body = await request.body()
    if not body or len(body) > _MAX_BODY:
        return {}
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        if not isinstance(parsed, dict):
            return {}
        return {k: v for k, v in parsed.items() if isinstance(v, str)}
    if "x-www-form-urlencoded" in content_type:
        fields = parse_qs(body.decode("utf-8", "replace"))
        return {name: values[0] for name, values in fields.items() if values}
    return {}


def origin_refusal(request: Request, context: AuthContext) -> Response | None:
    """403 when a browser sent this request from another site (or `Origin: null`)."""
    hosts = (request.headers.get("host"), request.headers.get("x-forwarded-host"))
    origin = request.headers.get("origin")
    if csrf.origin_allowed(origin, hosts, context.settings.auth_cors_origins):
        return None
    logger.warning("refused %s %s from another site", request.method, request.url.path)
    return _refused("a request from another site is refused")


async def csrf_refusal(
    request: Request, context: AuthContext, operator: Operator
) -> Response | None:
    """403 `{"error": "csrf"}` unless the request is same-site and carries the session's token."""
    refused = origin_refusal(request, context)
    if refused is not None:
        return refused
    given = request.headers.get(csrf.HEADER) or (await body_fields(request)).get(csrf.FIELD)
    if csrf.token_matches(operator.session.csrf_token, given):
        return None
    logger.warning("refused %s %s: CSRF token missing or wrong", request.method, request.url.path)
    return _refused("the CSRF token is missing or wrong; reload the page")


async def operator_acting(request: Request, context: AuthContext) -> Operator | Response:
    """The operator of a state-changing request, or the answer refusing it (no operator
    cookie: 401; not same-site or without the CSRF token: 403)."""
    operator = await current_operator(request, context)
    if operator is None:
        return operator_required(request)
    refused = await csrf_refusal(request, context, operator)
    return operator if refused is None else refused


def _refused(detail: str) -> Response:
    return JSONResponse({"error": "csrf", "detail": detail}, status_code=403, headers=NO_STORE)
