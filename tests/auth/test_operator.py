"""The operator role: only the operator logs in and out of Upstox and reads the profile; anyone
else learns only whether the feed is logged in. The operator signs in with a one-time link (in
auth's log at start, or from `tickstream operator-link`) or a password, gets an HttpOnly,
SameSite=Strict cookie, and every state-changing request needs the session's CSRF token from
this site. The real auth app with a real Redis and the simulator as Upstox."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from services.auth.operator import mint_code
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient
from tests.auth.conftest import (
    RunningAuth,
    TokenEvents,
    auth_settings,
    dialog_login,
    running_auth,
    sign_in_as_operator,
)
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually

HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def logged_in(
    simulator: SimulatorHandle, redis_url: str, token_events: TokenEvents
) -> AsyncIterator[RunningAuth]:
    """auth with DEMO01 logged in by the operator (the fixture's client is the operator)."""
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        assert (await dialog_login(auth, simulator)).status_code == 200
        assert (await token_events.next()).event == "login"
        yield auth


def anyone(auth: RunningAuth) -> httpx.AsyncClient:
    """A client with no operator cookie."""
    return httpx.AsyncClient(base_url=auth.url, timeout=30)


async def still_logged_in(redis_client: aioredis.Redis, simulator: SimulatorHandle) -> None:
    found = await SessionStore(redis_client).active_token()
    assert found is not None and found[0] == "DEMO01"
    async with UpstoxClient(simulator.http_url) as upstox:
        assert (await upstox.profile(found[1])).user_id == "DEMO01"  # not revoked


def cookie_of(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


# ---- what anyone may do ------------------------------------------------------------------


async def test_anyone_cannot_log_the_operator_out(
    logged_in: RunningAuth,
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    async with anyone(logged_in) as http:
        plain = await http.post("/logout", headers=JSON)
        form = await http.post("/logout", data={"user_id": "DEMO01"}, headers=HTML)

    assert (plain.status_code, plain.json()["error"]) == (401, "operator_required")
    assert (form.status_code, form.headers["location"]) == (303, "/auth/")
    await token_events.assert_quiet()
    await still_logged_in(redis_client, simulator)


async def test_anyone_cannot_read_the_profile_nor_whose_session_it_is(
    logged_in: RunningAuth,
) -> None:
    async with anyone(logged_in) as http:
        profile = await http.get("/user-profile/DEMO01", headers=JSON)
        session = await http.get("/session")
        home = await http.get("/", headers=HTML)
    operator_view = (await logged_in.http.get("/session")).json()

    assert (profile.status_code, profile.json()["error"]) == (401, "operator_required")
    assert "@" not in profile.text
    body = session.json()
    assert set(body) == {"logged_in", "valid", "expires_at"}
    assert (body["logged_in"], body["valid"]) == (True, True)
    assert "DEMO01" not in session.text and "DEMO01" not in home.text
    assert 'action="logout"' not in home.text and "Sign in" not in home.text  # the link's page
    assert "tickstream operator-link" in home.text
    assert operator_view["user_id"] == "DEMO01" and operator_view["operator"] is True
    assert operator_view["csrf_token"] == logged_in.http.headers["X-CSRF-Token"]
    own = await logged_in.http.get("/user-profile/DEMO01", headers=JSON)
    assert own.status_code == 200 and own.json()["user_id"] == "DEMO01"


async def test_anyone_cannot_start_a_login_and_a_state_not_issued_is_refused(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        async with anyone(auth) as http:
            program = await http.get("/authorize", headers=JSON)
            browser = await http.get("/authorize", headers=HTML)
            forged = await http.get(
                "/exchange-token", params={"code": "c", "state": "not-issued"}, headers=JSON
            )
        keys = await redis_client.keys("tickstream:oauth:*")

    assert (program.status_code, program.json()["error"]) == (401, "operator_required")
    assert (browser.status_code, browser.headers["location"]) == (303, "/auth/")
    assert keys == []  # no OAuth state for anyone to complete
    assert (forged.status_code, forged.json()["error"]) == (400, "unknown_state")
    assert await SessionStore(redis_client).active() is None


# ---- signing in --------------------------------------------------------------------------


async def test_the_link_in_the_log_signs_in_once(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "services.auth.operator")
    settings = auth_settings(redis_url, simulator.http_url, auth_operator_link_minutes=5)
    async with running_auth(settings, operator=False) as auth:

        def announced() -> list[str]:
            return [r.getMessage() for r in caplog.records if "sign-in link" in r.getMessage()]

        (line,) = await eventually(announced, "the sign-in link in auth's log")
        link = line.split(": ", 1)[1]
        assert line.startswith("operator sign-in link (single use, valid 5 min): ")
        assert link.startswith("http://127.0.0.1:8001/auth/operator?code=")  # the public origin
        code = parse_qs(urlsplit(link).query)["code"][0]
        assert not [key for key in await redis_client.keys("*") if code.encode() in key]

        first = await auth.http.get("/operator", params={"code": code}, headers=HTML)
        operator_page = await auth.http.get("/", headers=HTML)
        async with anyone(auth) as again:
            second = await again.get("/operator", params={"code": code}, headers=JSON)

    assert (first.status_code, first.headers["location"]) == (303, "./")
    assert 'action="sign-out"' in operator_page.text
    assert (second.status_code, second.json()["error"]) == (401, "bad_link")
    assert code not in caplog.text.replace(line, "")  # logged once, by the announcement only


async def test_password_sign_in_wrong_password_and_the_rate_limit(
    simulator: SimulatorHandle, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = auth_settings(
        redis_url,
        simulator.http_url,
        auth_operator_password=PASSWORD,
        auth_operator_logins_per_minute=3,
    )
    async with running_auth(settings, operator=False) as auth:
        page = await auth.http.get("/", headers=HTML)
        wrong = await auth.http.post("/operator", data={"password": "guess"}, headers=JSON)
        right = await auth.http.post("/operator", json={"password": PASSWORD})
        session = await auth.http.get("/session")
        form = await auth.http.post("/operator", data={"password": PASSWORD}, headers=HTML)
        over = await auth.http.post("/operator", data={"password": PASSWORD}, headers=JSON)
        redis_keys = await auth.context.redis.keys("*")

    assert "type=password name=password" in page.text
    assert (wrong.status_code, wrong.json()["error"]) == (401, "bad_password")
    assert right.status_code == 200 and right.json()["operator"] is True
    assert session.json()["operator"] is True
    assert (form.status_code, form.headers["location"]) == (303, "./")
    assert (over.status_code, over.json()["error"]) == (429, "too_many_attempts")
    assert int(over.headers["retry-after"]) >= 1
    assert not [key for key in redis_keys if b":operator:code:" in key]
    assert "sign-in link" not in caplog.text  # a password is set: no link is printed
    assert "guess" not in caplog.text and PASSWORD not in caplog.text
    assert "wrong password" in caplog.text


async def test_the_cookie_is_httponly_strict_and_only_its_hash_is_stored(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = auth_settings(redis_url, simulator.http_url, auth_operator_session_hours=2)
    async with running_auth(settings, operator=False) as auth:
        plain = await auth.http.get(
            "/operator", params={"code": await mint_code(auth.context.redis, 60)}, headers=JSON
        )
        # The test is a trusted proxy (loopback) that served https.
        tls = await auth.http.get(
            "/operator",
            params={"code": await mint_code(auth.context.redis, 60)},
            headers={**JSON, "X-Forwarded-Proto": "https"},
        )
        values = [await redis_client.get(key) for key in await redis_client.keys("*")]
        keys = await redis_client.keys("*")

    morsel = cookie_of(plain)["tickstream_operator"]
    assert morsel["httponly"] is True and morsel["samesite"] == "strict"
    assert (morsel["path"], morsel["max-age"], morsel["secure"]) == ("/", "7200", "")
    assert cookie_of(tls)["tickstream_operator"]["secure"] is True
    for value in (morsel.value, cookie_of(tls)["tickstream_operator"].value):
        assert not [k for k in keys if value.encode() in k]
        assert not [v for v in values if v is not None and value.encode() in v]


async def test_the_cli_mints_a_link_that_signs_in(
    simulator: SimulatorHandle, redis_url: str
) -> None:
    settings = auth_settings(redis_url, simulator.http_url)
    async with running_auth(settings, operator=False) as auth:
        env = {**os.environ, "REDIS_URL": redis_url, "UPSTOX_REDIRECT_URI": auth.url + "/x"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "operator-link",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        link = out.decode().splitlines()[-1]
        code = parse_qs(urlsplit(link).query)["code"][0]
        signed = await auth.http.get("/operator", params={"code": code}, headers=JSON)

    assert process.returncode == 0
    assert link.startswith(auth.url + "/auth/operator?code=")
    assert signed.status_code == 200 and signed.json()["operator"] is True


# ---- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        ({}, "no token"),
        ({"X-CSRF-Token": "wrong"}, "a wrong token"),
        ({"Origin": "null"}, "Origin: null"),
        ({"Origin": "https://evil.example"}, "a foreign Origin"),
    ],
)
async def test_a_logout_without_the_csrf_token_or_from_another_site_is_refused(
    logged_in: RunningAuth,
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    headers: dict[str, str],
    what: str,
) -> None:
    token = logged_in.http.headers["X-CSRF-Token"]
    if what == "no token":
        del logged_in.http.headers["X-CSRF-Token"]
    else:  # Origin cases carry the right token: the Origin alone must refuse them
        headers = {"X-CSRF-Token": headers.get("X-CSRF-Token", token), **headers}
    refused = await logged_in.http.post("/logout", headers={**JSON, **headers})
    form = await logged_in.http.post(
        "/logout", data={"csrf_token": "wrong"}, headers={"X-CSRF-Token": ""}
    )

    assert (refused.status_code, refused.json()["error"]) == (403, "csrf"), what
    assert (form.status_code, form.json()["error"]) == (403, "csrf")
    await token_events.assert_quiet()
    await still_logged_in(redis_client, simulator)


async def test_the_operator_logs_out_with_the_token_then_signs_out(
    logged_in: RunningAuth, token_events: TokenEvents, redis_client: aioredis.Redis
) -> None:
    token = logged_in.http.headers.pop("X-CSRF-Token")
    this_site = {"Origin": logged_in.url}
    form = await logged_in.http.post(
        "/logout", data={"csrf_token": token, "user_id": "DEMO01"}, headers={**HTML, **this_site}
    )
    assert (form.status_code, form.headers["location"]) == (303, "./")
    assert (await token_events.next()).event == "logout"

    refused = await logged_in.http.post("/sign-out", headers=JSON)
    signed_out = await logged_in.http.post("/sign-out", headers={**JSON, "X-CSRF-Token": token})
    after = await logged_in.http.get("/session")
    again = await logged_in.http.post("/logout", headers={**JSON, "X-CSRF-Token": token})

    assert (refused.status_code, refused.json()["error"]) == (403, "csrf")
    assert signed_out.status_code == 200
    assert "operator" not in after.json()
    assert (again.status_code, again.json()["error"]) == (401, "operator_required")
    assert await redis_client.keys("tickstream:operator:session:*") == []
    await sign_in_as_operator(logged_in)  # a new session, a new token
    assert logged_in.http.headers["X-CSRF-Token"] != token
