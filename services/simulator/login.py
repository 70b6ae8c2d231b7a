"""OAuth login: the authorization dialog, the token exchange and logout."""

from __future__ import annotations

import html
import logging
import secrets
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from services.simulator.accounts import (
    AUTH_CODE_LIFETIME_MS,
    DEMO_USERS,
    AuthCode,
    TokenRecord,
)
from services.simulator.clock import now_ms
from services.simulator.errors import (
    BAD_CLIENT_OR_REDIRECT,
    INVALID_CREDENTIALS,
    INVALID_INPUT,
    TOKEN_CLIENT_MISMATCH,
    EnvelopeError,
)
from services.simulator.state import require_user, state_of

logger = logging.getLogger(__name__)
router = APIRouter()

DIALOG_PATH = "/v2/login/authorization/dialog"
MAX_FORM_BYTES = 16_384


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (first value of each field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise EnvelopeError(400, INVALID_INPUT, "Invalid Input")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError(400, INVALID_INPUT, "Invalid Input") from None
    return {name: values[0] for name, values in fields.items()}


def _check_client(request: Request, client_id: str | None, redirect_uri: str | None) -> None:
    settings = state_of(request).settings
    if (
        client_id is None
        or redirect_uri is None
        or not secrets.compare_digest(client_id, settings.simulator_client_id)
        or redirect_uri not in settings.simulator_redirect_uris
    ):
        raise EnvelopeError(
            400,
            BAD_CLIENT_OR_REDIRECT,
            "Check your 'client_id' and 'redirect_uri'; one or both are incorrect.",
        )


def _page(client_id: str, redirect_uri: str, state: str | None) -> str:
    def hidden(name: str, value: str | None) -> str:
        if value is None:
            return ""
        return f'<input type="hidden" name="{name}" value="{html.escape(value, quote=True)}">'

    options = "".join(
        f'<option value="{html.escape(user.user_id)}">{html.escape(user.user_name)}'
        f" ({html.escape(user.user_id)})</option>"
        for user in DEMO_USERS
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Simulated Upstox login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1.5rem}}select{{font-size:1rem}}</style></head>
<body><h1>Simulated Upstox login</h1>
<p>This is the tickstream simulator standing in for Upstox. No password is needed:
choose a demo user and log in to return to the app.</p>
<form method="post" action="{DIALOG_PATH}">
{hidden("response_type", "code")}{hidden("client_id", client_id)}
{hidden("redirect_uri", redirect_uri)}{hidden("state", state)}
<p><label>User <select name="user_id">{options}</select></label></p>
<p><button type="submit" id="login">Log in</button></p>
</form></body></html>"""


@router.get(DIALOG_PATH, response_class=HTMLResponse)
async def dialog(
    request: Request,
    client_id: str | None = None,
    redirect_uri: str | None = None,
    state: str | None = None,
    response_type: str | None = None,
) -> HTMLResponse:
    _check_client(request, client_id, redirect_uri)
    if response_type != "code":
        raise EnvelopeError(400, INVALID_INPUT, "response_type must be code")
    assert client_id is not None and redirect_uri is not None
    return HTMLResponse(_page(client_id, redirect_uri, state))


@router.post(DIALOG_PATH)
async def approve(request: Request) -> RedirectResponse:
    """The dialog's button: log the chosen demo user in and send the browser back."""
    form = await read_form(request)
    client_id, redirect_uri, state = (
        form.get("client_id"),
        form.get("redirect_uri"),
        form.get("state"),
    )
    _check_client(request, client_id, redirect_uri)
    assert client_id is not None and redirect_uri is not None
    user = next((u for u in DEMO_USERS if u.user_id == form.get("user_id")), DEMO_USERS[0])
    code = state_of(request).auth_codes.issue(
        AuthCode(user, client_id, redirect_uri, now_ms() + AUTH_CODE_LIFETIME_MS)
    )
    query = {"code": code} | ({"state": state} if state is not None else {})
    separator = "&" if "?" in redirect_uri else "?"
    logger.info("login dialog approved for %s", user.user_id)
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(query)}", status_code=302)


@router.post("/v2/login/authorization/token")
async def token(request: Request) -> JSONResponse:
    form = await read_form(request)
    code, client_id, client_secret, redirect_uri, grant_type = (
        form.get(name)
        for name in ("code", "client_id", "client_secret", "redirect_uri", "grant_type")
    )
    sim = state_of(request)
    if not (code and client_id and client_secret and redirect_uri and grant_type):
        raise EnvelopeError(400, INVALID_INPUT, "Invalid Input")
    # the code is spent by this attempt whatever its outcome, as Upstox documents
    grant = sim.auth_codes.take(code, now_ms())
    if grant_type != "authorization_code":
        raise EnvelopeError(400, INVALID_INPUT, "grant_type must be authorization_code")
    if client_id != sim.settings.simulator_client_id or (
        grant is not None and (grant.client_id != client_id or grant.redirect_uri != redirect_uri)
    ):
        raise EnvelopeError(
            400,
            TOKEN_CLIENT_MISMATCH,
            "Check your 'client_id' and 'redirect_uri'; one or both are incorrect.",
        )
    secret = sim.settings.simulator_client_secret.get_secret_value()
    if grant is None or not secrets.compare_digest(client_secret, secret):
        raise EnvelopeError(400, INVALID_CREDENTIALS, "Invalid Credentials")
    access, extended = sim.tokens.issue(grant.user, now_ms())
    user = grant.user
    logger.info("issued an access token to %s", user.user_id)
    return JSONResponse(
        {
            "email": user.email,
            "exchanges": list(user.exchanges),
            "products": list(user.products),
            "broker": "UPSTOX",
            "user_id": user.user_id,
            "user_name": user.user_name,
            "order_types": list(user.order_types),
            "user_type": user.user_type,
            "poa": user.poa,
            "is_active": user.is_active,
            "access_token": access,
            "extended_token": extended,
        }
    )


@router.delete("/v2/logout")
async def logout(
    request: Request, auth: Annotated[tuple[str, TokenRecord], Depends(require_user)]
) -> JSONResponse:
    state_of(request).tokens.revoke(auth[0])
    state_of(request).hub.close_for_invalid_tokens()
    return JSONResponse({"status": "success", "data": True})
