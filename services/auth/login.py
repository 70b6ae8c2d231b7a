"""The OAuth login: `/authorize` hands out the dialog URL, `/exchange-token` is the callback."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from services.auth.context import AuthContext, Ctx
from services.auth.guard import current_operator, operator_required
from services.auth.metrics import LoginFailure
from services.auth.respond import NO_STORE, prefers_json, problem
from services.auth.state import MAX_NEXT_LENGTH, consume_state, new_state, safe_next_url
from shared.ist import format_ist
from shared.redis_contract import StoredSession
from shared.upstox.client import dialog_url
from shared.upstox.errors import UpstoxAuthError, UpstoxError, UpstoxRequestError
from shared.upstox.models import Profile, TokenResponse

logger = logging.getLogger(__name__)

router = APIRouter()


class LoginRefused(Exception):
    """A callback that cannot complete; `detail` is safe to show (no code, no token)."""

    def __init__(self, status: int, reason: LoginFailure, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@router.get("/authorize")
async def authorize(request: Request, context: Ctx, next: str | None = None) -> Response:
    """302 to Upstox's login dialog; `Accept: application/json` gets `{"auth_url": ...}`.

    Refused before anything is stored: a client over its rate (429, Retry-After), anyone but
    the operator (401, a browser is sent to sign in), a `next` that is not a short same-site
    path (400). Only here is an OAuth state created, so only the operator starts a login that
    `/exchange-token` completes."""
    settings = context.settings
    client = request.client.host if request.client is not None else ""
    wait = context.authorize_limit.take(client, time.monotonic())
    if wait:
        refused = context.metrics.login_starts_refused
        refused["rate"] += 1
        if refused["rate"] % 100 == 1:  # one line per hundred: a flood must not flood the log
            logger.warning("login starts over the rate refused so far: %d", refused["rate"])
        response = problem(
            request,
            429,
            "too_many_logins",
            "too many logins started; try again shortly",
            "Slow down",
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if await current_operator(request, context) is None:
        return operator_required(request)
    next_url = safe_next_url(next, settings.auth_dashboard_url)
    if next_url is None:
        context.metrics.login_starts_refused["bad_next"] += 1
        return problem(
            request,
            400,
            "bad_next",
            f"next must be a path on this site (starting with one /, at most {MAX_NEXT_LENGTH} "
            "characters)",
            "Login failed",
        )
    state = await new_state(context.redis, settings.auth_state_ttl_seconds, next_url)
    url = dialog_url(
        settings.dialog_base_url, settings.api_key, settings.upstox_redirect_uri, state
    )
    context.metrics.login_starts += 1
    if prefers_json(request):
        return JSONResponse({"auth_url": url}, headers=NO_STORE)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.get("/exchange-token")
async def exchange_token(
    request: Request,
    context: Ctx,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """The OAuth callback: state checked and spent, code exchanged, session stored, event sent.

    Open to anyone, as it must be: Upstox's redirect is a cross-site navigation, which carries
    no SameSite=Strict cookie. It completes only a state that the operator's `/authorize`
    stored (single use, short TTL); any other state is refused before Upstox is asked."""
    try:
        session, next_url = await _complete_login(context, code, state, error)
    except LoginRefused as refused:
        context.metrics.login_failures[refused.reason] += 1
        logger.warning("login refused (%s): %s", refused.reason, refused.detail)
        return problem(request, refused.status, refused.reason, refused.detail, "Login failed")
    context.metrics.logins += 1
    if prefers_json(request):
        body = {
            "logged_in": True,
            "user_id": session.user_id,
            "user_name": session.user_name,
            "expires_at": format_ist(session.expires_at),
        }
        return JSONResponse(body, headers=NO_STORE)
    return RedirectResponse(next_url, status_code=303, headers=NO_STORE)


async def _complete_login(
    context: AuthContext, code: str | None, state: str | None, error: str | None
) -> tuple[StoredSession, str]:
    if not state:
        raise LoginRefused(400, "missing_state", "the callback has no state parameter")
    record = await consume_state(context.redis, state)
    if record is None:
        raise LoginRefused(
            400,
            "unknown_state",
            "this login link is unknown, expired or already used; start the login again",
        )
    if error:
        # Shown and logged: keep it short and on one line (it comes from the query string).
        reason = "".join(ch if ch.isprintable() else " " for ch in error[:200])
        raise LoginRefused(400, "upstox_denied", f"Upstox ended the login: {reason}")
    if not code:
        raise LoginRefused(400, "missing_code", "the callback has no code parameter")
    settings = context.settings
    try:
        token = await context.upstox.exchange_code(
            code,
            settings.api_key,
            settings.api_secret.get_secret_value(),
            settings.upstox_redirect_uri,
        )
    except (UpstoxAuthError, UpstoxRequestError) as refused:
        context.metrics.token_exchanges["refused"] += 1
        raise LoginRefused(
            400, "upstox_refused", f"Upstox refused the login code ({refused.describe()})"
        ) from None
    except UpstoxError as failed:
        context.metrics.token_exchanges["error"] += 1
        raise LoginRefused(
            502, "upstox_unavailable", f"Upstox could not complete the login ({failed.describe()})"
        ) from None
    context.metrics.token_exchanges["ok"] += 1
    access_token = token.access_token.get_secret_value()
    who: TokenResponse | Profile
    try:
        who = await context.upstox.profile(access_token)
    except UpstoxAuthError as refused:
        raise LoginRefused(
            502, "token_refused", f"Upstox refused the token it just issued ({refused.describe()})"
        ) from None
    except UpstoxError as failed:
        # The exchange's answer names the user too; a flaky profile call need not cost a login.
        logger.warning("profile after login failed (%s); using the token answer", failed)
        who = token
    async with context.keeper.lock:
        session = await context.store.save(who, access_token)
        context.keeper.kept(session)  # the durable copy: a Redis crash must not lose the login
    if context.env_token is not None:
        context.env_token.replaced()
    logger.info("login of %s complete", session.user_id)
    return session, record.next_url
