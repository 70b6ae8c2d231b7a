"""Reading and ending the stored session: `/token`, `/session`, `/user-profile`, `/logout`, `/`."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from redis.exceptions import RedisError

from services.auth.context import AuthContext, Ctx
from services.auth.guard import (
    body_fields,
    current_operator,
    operator_acting,
    operator_required,
)
from services.auth.pages import home_page, sign_in_page
from services.auth.respond import NO_STORE, prefers_html, problem
from shared.ist import format_ist
from shared.redis_contract import StoredSession
from shared.upstox.errors import UpstoxAuthError, UpstoxError

logger = logging.getLogger(__name__)

router = APIRouter()

USER_ID_PATTERN: Final = r"^[A-Za-z0-9_.@-]{1,64}$"
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN)]


def is_valid(session: StoredSession, now: float | None = None) -> bool:
    return session.valid and session.expires_at > (time.time() if now is None else now)


def session_metadata(session: StoredSession) -> dict[str, Any]:
    """What may be shown about a session: never the token (nor the e-mail address)."""
    return {
        "user_id": session.user_id,
        "user_name": session.user_name,
        "issued_at": format_ist(session.issued_at),
        "expires_at": format_ist(session.expires_at),
        "valid": is_valid(session),
    }


def _no_session(request: Request, user_id: str) -> Response:
    return problem(request, 404, "no_session", f"no session for {user_id}", "Not logged in")


@router.get("/token/{user_id}")
async def token(
    request: Request,
    context: Ctx,
    user_id: UserId,
    x_internal_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Session metadata; the token itself only for a caller with the internal service key."""
    session = await context.store.get(user_id)
    if session is None:
        return _no_session(request, user_id)
    body = session_metadata(session)
    if x_internal_key is not None:
        expected = context.settings.internal_service_key
        # An empty key is no key: it must not match an empty header.
        if (
            not expected
            or not expected.get_secret_value()
            or not secrets.compare_digest(
                x_internal_key.encode(), expected.get_secret_value().encode()
            )
        ):
            context.metrics.internal_token_reads["denied"] += 1
            logger.warning("refused a token read with a wrong or disabled X-Internal-Key")
            return problem(request, 403, "forbidden", "wrong internal service key", "Forbidden")
        context.metrics.internal_token_reads["granted"] += 1
        body["access_token"] = context.store.decrypt(session)
    return JSONResponse(body, headers=NO_STORE)


@router.get("/session")
async def active_session(request: Request, context: Ctx) -> Response:
    """Whether the feed is logged in to Upstox, and until when (the dashboard's header).

    Anyone gets only `logged_in`, `valid`, `expires_at` (or `{"logged_in": false}`); the
    operator also gets who is logged in, `"operator": true` and the CSRF token of their
    session (only a page of this site can read it: auth sends no permissive CORS)."""
    operator = await current_operator(request, context)
    session = await context.store.active()
    body: dict[str, Any] = {"logged_in": session is not None}
    if session is not None:
        shown = session_metadata(session)
        if operator is None:
            shown = {name: shown[name] for name in ("valid", "expires_at")}
        body.update(shown)
    if operator is not None:
        body.update(operator=True, csrf_token=operator.session.csrf_token)
    return JSONResponse(body, headers=NO_STORE)


@router.get("/user-profile/{user_id}")
async def user_profile(request: Request, context: Ctx, user_id: UserId) -> Response:
    """The user's profile, fetched from Upstox with the stored token: the operator's only."""
    if await current_operator(request, context) is None:
        return operator_required(request)
    session = await context.store.get(user_id)
    if session is None:
        return _no_session(request, user_id)
    access_token = context.store.decrypt(session)
    try:
        profile = await context.upstox.profile(access_token)
    except UpstoxAuthError as refused:
        await context.store.mark_invalid(user_id, access_token)
        return problem(
            request,
            401,
            "token_refused",
            f"Upstox refused the stored token ({refused.describe()}); log in again",
            "Session expired",
        )
    except UpstoxError as failed:
        return problem(
            request, 502, "upstox_unavailable", f"Upstox failed: {failed.describe()}", "Upstox"
        )
    return JSONResponse(profile.model_dump(mode="json"), headers=NO_STORE)


@router.post("/logout")
async def logout(request: Request, context: Ctx) -> Response:
    """Log out at Upstox, forget the session, announce it. `user_id` defaults to the active one.

    With Redis down the logout is still taken when auth keeps a durable copy: revoked at Upstox
    with the copy's token, the copy removed, the logout recorded; the restore loop deletes the
    session and announces the logout once Redis is back (`restore.py`).

    The operator's only, same-site, with the session's CSRF token (`guard.py`)."""
    acting = await operator_acting(request, context)
    if isinstance(acting, Response):
        return acting
    requested = await _logout_user_id(request)
    copy = context.keeper.session()
    redis_up = True
    try:
        user_id = requested or await context.store.active_user()
        session = None if user_id is None else await context.store.get(user_id)
    except RedisError:
        user_id = requested or (copy.user_id if copy is not None else None)
        if not context.keeper.enabled or user_id is None:
            raise
        session, redis_up = None, False
    if user_id is None:
        return problem(request, 404, "no_session", "nobody is logged in", "Not logged in")
    if session is None and copy is not None and copy.user_id == user_id:
        session = copy  # Redis lost it or is down: the copy holds the token to revoke
    upstox = await _logout_at_upstox(context, session)
    async with context.keeper.lock:
        recorded = context.keeper.logout_begins(user_id)
        existed = await _forget_in_redis(context, user_id, recorded) if redis_up else None
    if existed is None:
        context.metrics.recovery["logout_deferred"] += 1
        logger.warning("Redis is down: the logout of %s is applied once it is back", user_id)
    elif not existed and session is None:
        return _no_session(request, user_id)
    if context.env_token is not None:
        context.env_token.logged_out(user_id)
    context.metrics.logouts += 1
    if prefers_html(request):
        return RedirectResponse("./", status_code=303, headers=NO_STORE)
    return JSONResponse({"logged_out": True, "user_id": user_id, "upstox": upstox})


async def _forget_in_redis(context: AuthContext, user_id: str, recorded: int | None) -> bool | None:
    """Delete the session in Redis (event `logout`): whether there was one; None when Redis
    failed and the recorded logout waits for the restore loop."""
    try:
        existed = await context.store.delete(user_id)
    except RedisError:
        if recorded is None:
            raise
        return None
    if recorded is not None:
        context.keeper.logout_applied(user_id, recorded)
    return existed


async def _logout_at_upstox(context: AuthContext, session: StoredSession | None) -> str:
    if session is None:
        return "no session"
    try:
        await context.upstox.logout(context.store.decrypt(session))
    except UpstoxAuthError:
        return "token already invalid"
    except UpstoxError as failed:
        # The local session goes anyway: the user asked to be logged out here.
        logger.warning("Upstox logout of %s failed: %s", session.user_id, failed.describe())
        return "failed"
    return "ok"


async def _logout_user_id(request: Request) -> str | None:
    """`user_id` from the query, a JSON body or a form body; None: the active user."""
    value = request.query_params.get("user_id")
    if value is None:
        value = (await body_fields(request)).get("user_id")
    if value is not None and re.fullmatch(USER_ID_PATTERN, value):
        return value
    return None


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, context: Ctx) -> Response:
    """The operator's page; anyone else gets the sign-in page (and learns nobody's name)."""
    operator = await current_operator(request, context)
    dashboard = context.settings.auth_dashboard_url
    if operator is None:
        page = sign_in_page(context.settings.auth_operator_password is not None, dashboard)
        return HTMLResponse(page, headers=NO_STORE)
    session = await context.store.active()
    valid = session is not None and is_valid(session)
    page = home_page(session, valid, dashboard, operator.session.csrf_token)
    return HTMLResponse(page, headers=NO_STORE)
