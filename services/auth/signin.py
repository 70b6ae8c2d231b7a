"""The operator's sign-in and sign-out: `GET/POST /operator`, `POST /sign-out`.

Signing in takes a one-time code (the link in auth's log, or `tickstream operator-link`) or,
when AUTH_OPERATOR_PASSWORD is set, that password; either sets the `tickstream_operator`
cookie (HttpOnly, SameSite=Strict, Path=/, Secure over https). Attempts are counted per client
address, successful or not. Neither the code, the password nor the cookie is ever logged.
"""

from __future__ import annotations

import logging
import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.auth.context import AuthContext, Ctx
from services.auth.guard import body_fields, current_operator, operator_acting, origin_refusal
from services.auth.operator import COOKIE
from services.auth.pages import sign_in_page
from services.auth.respond import NO_STORE, prefers_html, problem

logger = logging.getLogger(__name__)

router = APIRouter()


@router.get("/operator")
async def sign_in_with_link(request: Request, context: Ctx, code: str | None = None) -> Response:
    """Redeem a one-time code (`?code=`), or show the sign-in page."""
    if code is None:
        if await current_operator(request, context) is not None:
            return RedirectResponse("./", status_code=303, headers=NO_STORE)
        return _sign_in_page(context)
    return await _attempt(request, context, code=code, password=None)


@router.post("/operator")
async def sign_in(request: Request, context: Ctx) -> Response:
    """Sign in with the `password` (or a one-time `code`) of a form or JSON body."""
    refused = origin_refusal(request, context)
    if refused is not None:
        return refused
    fields = await body_fields(request)
    return await _attempt(
        request, context, code=fields.get("code"), password=fields.get("password")
    )


@router.post("/sign-out")
async def sign_out(request: Request, context: Ctx) -> Response:
    acting = await operator_acting(request, context)
    if isinstance(acting, Response):
        return acting
    await context.operators.close(acting.session_id)
    logger.info("operator signed out")
    response: Response
    if prefers_html(request):
        response = RedirectResponse("./", status_code=303, headers=NO_STORE)
    else:
        response = JSONResponse({"operator": False}, headers=NO_STORE)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def _attempt(
    request: Request, context: AuthContext, *, code: str | None, password: str | None
) -> Response:
    client = request.client.host if request.client is not None else ""
    wait = context.operator_login_limit.take(client, time.monotonic())
    if wait:
        context.metrics.operator_sign_ins["rate"] += 1
        response = problem(
            request, 429, "too_many_attempts", "too many sign-in attempts; wait", "Slow down"
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if code:
        accepted, what = await context.operators.redeem(code), "link"
    else:
        accepted, what = _password_matches(context, password), "password"
    if not accepted:
        context.metrics.operator_sign_ins["refused"] += 1
        logger.warning("operator sign-in refused from %s: wrong %s", client, what)
        detail = (
            "this sign-in link is unknown, expired or already used; mint a new one with "
            "`tickstream operator-link`"
            if what == "link"
            else "wrong password"
        )
        if prefers_html(request):
            page = sign_in_page(_password_set(context), context.settings.auth_dashboard_url, detail)
            return HTMLResponse(page, status_code=401, headers=NO_STORE)
        return problem(request, 401, f"bad_{what}", detail, "Sign-in refused")
    session_id, session = await context.operators.open()
    context.metrics.operator_sign_ins["ok"] += 1
    logger.info("operator signed in (%s) from %s", what, client)
    if prefers_html(request):
        response = RedirectResponse("./", status_code=303, headers=NO_STORE)
    else:
        response = JSONResponse(
            {"operator": True, "csrf_token": session.csrf_token}, headers=NO_STORE
        )
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=context.operators.lifetime_seconds,
        path="/",
        secure=request.url.scheme == "https",  # the scheme the trusted proxy says it served
        httponly=True,
        samesite="strict",
    )
    return response


def _password_set(context: AuthContext) -> bool:
    return context.settings.auth_operator_password is not None


def _password_matches(context: AuthContext, given: str | None) -> bool:
    expected = context.settings.auth_operator_password
    if expected is None or not given:
        return False
    return secrets.compare_digest(given.encode(), expected.get_secret_value().encode())


def _sign_in_page(context: AuthContext) -> Response:
    page = sign_in_page(_password_set(context), context.settings.auth_dashboard_url)
    return HTMLResponse(page, headers=NO_STORE)
