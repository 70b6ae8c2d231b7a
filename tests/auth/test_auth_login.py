"""auth with the simulator as Upstox: the whole browser login, refusals, the environment token,
the profile endpoint and logout, over real HTTP with a real Redis. No response and no log line
may carry the access token."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from shared.ist import next_token_expiry
from shared.redis_contract import ACTIVE_SESSION, TokenEvent, session_key
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError
from tests.auth.conftest import REDIRECT_URI, TokenEvents, auth_settings, running_auth
from tests.support.simulator import SimulatorHandle, login_via_dialog

HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}
DIALOG = "/v2/login/authorization/dialog"


class LogWaiter(logging.Handler):
    """Sets `seen` when a record containing `text` is logged (in the loop's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


async def test_browser_login_round_trip(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = Fernet.generate_key().decode()
    settings = auth_settings(redis_url, simulator.http_url, token_encryption_key=key)
    bodies: list[str] = []
    async with running_auth(settings) as auth:
        # 1. auth sends the browser to the dialog with a fresh state.
        start = await auth.http.get("/authorize", headers=HTML)
        assert start.status_code == 302
        dialog = start.headers["location"]
        assert dialog.startswith(f"{simulator.http_url}{DIALOG}?")
        state = state_of(dialog)

        # 2. The user logs in at the (simulated) Upstox dialog, which redirects with a code.
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)

        # 3. The browser arrives at the callback and is sent on to the dashboard.
        callback = await auth.http.get(
            "/exchange-token", params={"code": code, "state": state}, headers=HTML
        )
        assert callback.status_code == 303
        assert callback.headers["location"] == "/"
        assert callback.headers["referrer-policy"] == "no-referrer"

        # 4. The session is in Redis, announced, and expires at the next 03:30 IST.
        assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
        store = SessionStore(redis_client, key)
        session = await store.get("DEMO01")
        assert session is not None
        assert (session.user_name, session.email) == ("Demo Trader", "demo@example.com")
        issued = dt.datetime.fromtimestamp(session.issued_at, dt.UTC)
        assert session.expires_at == int(next_token_expiry(issued).timestamp())
        ttl = await redis_client.ttl(session_key("DEMO01"))
        assert abs(ttl - (session.expires_at - time.time())) < 60
        assert abs(await redis_client.ttl(ACTIVE_SESSION) - ttl) <= 1
        token = store.decrypt(session)
        raw = await redis_client.get(session_key("DEMO01"))
        assert raw is not None and token.encode() not in raw

        # 5. The stored token is the one Upstox issued: it works there.
        async with UpstoxClient(simulator.http_url) as upstox:
            assert (await upstox.profile(token)).user_id == "DEMO01"

        # 6. Replaying the callback is refused and changes nothing.
        replay = await auth.http.get("/exchange-token", params={"code": code, "state": state})
        assert (replay.status_code, replay.json()["error"]) == (400, "unknown_state")
        await token_events.assert_quiet()

        for path in ("/session", "/token/DEMO01", "/user-profile/DEMO01", "/", "/metrics"):
            response = await auth.http.get(path)
            assert response.status_code == 200, path
            bodies.append(response.text)
        bodies += [start.text, callback.text, replay.text]
        session_body = (await auth.http.get("/session")).json()
        metrics = bodies[-4]

    assert session_body["logged_in"] is True and session_body["user_id"] == "DEMO01"
    assert "tickstream_auth_logins_total 1.0" in metrics
    assert 'tickstream_auth_token_exchanges_total{outcome="ok"} 1.0' in metrics
    for body in bodies:
        assert token not in body
    assert token not in caplog.text


async def test_json_login_round_trip(
    simulator: SimulatorHandle, redis_url: str, token_events: TokenEvents
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        auth_url = (await auth.http.get("/authorize", headers=JSON)).json()["auth_url"]
        state = state_of(auth_url)
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)
        done = await auth.http.get(
            "/exchange-token", params={"code": code, "state": state}, headers=JSON
        )
    assert done.status_code == 200
    body = done.json()
    assert (body["logged_in"], body["user_id"], body["user_name"]) == (
        True,
        "DEMO01",
        "Demo Trader",
    )
    assert body["expires_at"].endswith("T03:30:00+05:30")
    assert set(body) == {"logged_in", "user_id", "user_name", "expires_at"}
    assert (await token_events.next()).event == "login"


async def test_a_forged_state_is_refused_before_the_code_is_spent(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        state = state_of((await auth.http.get("/authorize", headers=JSON)).json()["auth_url"])
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)

        forged = await auth.http.get("/exchange-token", params={"code": code, "state": "forged"})
        assert (forged.status_code, forged.json()["error"]) == (400, "unknown_state")
        assert await redis_client.keys("tickstream:session:*") == []
        await token_events.assert_quiet()

        # The code was not sent to Upstox, so the real callback still completes.
        real = await auth.http.get("/exchange-token", params={"code": code, "state": state})
        assert real.status_code == 303
    assert (await token_events.next()).user_id == "DEMO01"


async def test_upstox_refusing_the_code_stores_nothing(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        state = state_of((await auth.http.get("/authorize", headers=JSON)).json()["auth_url"])
        refused = await auth.http.get(
            "/exchange-token", params={"code": "0123456789abcdef0123456789abcdef", "state": state}
        )
        page_state = state_of((await auth.http.get("/authorize", headers=JSON)).json()["auth_url"])
        page = await auth.http.get(
            "/exchange-token", params={"code": "feedface" * 4, "state": page_state}, headers=HTML
        )
        metrics = (await auth.http.get("/metrics")).text

    assert refused.status_code == 400
    assert refused.json()["error"] == "upstox_refused"
    assert "UDAPI100016" in refused.json()["detail"]
    assert "0123456789abcdef0123456789abcdef" not in refused.text
    assert page.status_code == 400 and "Upstox refused the login code" in page.text
    assert 'tickstream_auth_token_exchanges_total{outcome="refused"} 2.0' in metrics
    assert await redis_client.keys("tickstream:session:*") == []
    await token_events.assert_quiet()


async def test_a_wrong_api_secret_is_a_refusal_not_a_crash(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = auth_settings(redis_url, simulator.http_url, api_secret="not-the-secret")
    async with running_auth(settings) as auth:
        state = state_of((await auth.http.get("/authorize", headers=JSON)).json()["auth_url"])
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)
        refused = await auth.http.get("/exchange-token", params={"code": code, "state": state})
    assert (refused.status_code, refused.json()["error"]) == (400, "upstox_refused")
    assert "not-the-secret" not in refused.text
    assert await redis_client.keys("tickstream:session:*") == []


# ---- the token from the environment ---------------------------------------------------------


async def test_a_valid_environment_token_is_stored_once(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = auth_settings(
        redis_url, simulator.http_url, upstox_access_token=simulator.demo_token
    )
    async with running_auth(settings) as auth:
        assert auth.context.bootstrap is not None
        assert await auth.context.bootstrap == "stored"
        session = (await auth.http.get("/session")).json()
        assert (session["logged_in"], session["user_id"], session["valid"]) == (
            True,
            "DEMO01",
            True,
        )
    assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
    assert await SessionStore(redis_client).active_token() == ("DEMO01", simulator.demo_token)

    # A restart with the same token finds it stored: no second login event.
    async with running_auth(settings) as auth:
        assert auth.context.bootstrap is not None
        assert await auth.context.bootstrap == "unchanged"
    await token_events.assert_quiet()
    assert "UPSTOX_ACCESS_TOKEN accepted: logged in as DEMO01" in caplog.text
    assert simulator.demo_token not in caplog.text


async def test_a_refused_environment_token_is_logged_and_auth_still_serves(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "expired-console-token-8a7b6c"
    settings = auth_settings(redis_url, simulator.http_url, upstox_access_token=bad)
    async with running_auth(settings) as auth:
        assert auth.context.bootstrap is not None
        assert await auth.context.bootstrap == "refused"
        assert (await auth.http.get("/healthz")).status_code == 200
        assert (await auth.http.get("/readyz")).status_code == 200
        assert (await auth.http.get("/session")).json()["logged_in"] is False
        login = await auth.http.get("/authorize", headers=HTML)
        assert login.status_code == 302
        metrics = (await auth.http.get("/metrics")).text
    assert 'tickstream_auth_env_token_total{outcome="refused"} 1.0' in metrics
    assert await redis_client.keys("tickstream:session:*") == []
    await token_events.assert_quiet()
    refusals = [r for r in caplog.records if "UPSTOX_ACCESS_TOKEN was refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert "UDAPI100050" in refusals[0].getMessage()
    assert bad not in caplog.text


async def test_the_environment_token_waits_for_an_unreachable_upstox(
    nowhere: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    retrying = LogWaiter("cannot check UPSTOX_ACCESS_TOKEN yet")
    logging.getLogger("services.auth.bootstrap").addHandler(retrying)
    settings = auth_settings(redis_url, nowhere, upstox_access_token="console-token-31337")
    try:
        async with running_auth(settings) as auth:
            async with asyncio.timeout(60):
                await retrying.seen.wait()
            assert auth.context.bootstrap is not None
            assert not auth.context.bootstrap.done()
            assert (await auth.http.get("/healthz")).status_code == 200
    finally:
        logging.getLogger("services.auth.bootstrap").removeHandler(retrying)
    assert "console-token-31337" not in caplog.text


# ---- profile and logout with the stored token ------------------------------------------------


async def test_user_profile_uses_the_stored_token_and_notices_its_expiry(
    simulator: SimulatorHandle, redis_url: str, token_events: TokenEvents
) -> None:
    settings = auth_settings(
        redis_url, simulator.http_url, upstox_access_token=simulator.demo_token
    )
    async with running_auth(settings) as auth:
        assert auth.context.bootstrap is not None
        await auth.context.bootstrap
        assert (await token_events.next()).event == "login"
        profile = await auth.http.get("/user-profile/DEMO01")
        missing = await auth.http.get("/user-profile/NOBODY")

        assert await simulator.expire_tokens() >= 1
        expired = await auth.http.get("/user-profile/DEMO01")
        session = (await auth.http.get("/session")).json()

    assert profile.status_code == 200
    assert profile.json()["user_id"] == "DEMO01" and profile.json()["broker"] == "UPSTOX"
    assert "access_token" not in profile.json()
    assert missing.status_code == 404
    assert (expired.status_code, expired.json()["error"]) == (401, "token_refused")
    assert "log in again" in expired.json()["detail"]
    assert await token_events.next() == TokenEvent(event="invalid", user_id="DEMO01")
    assert (session["logged_in"], session["valid"]) == (True, False)


async def test_logout_ends_the_session_at_upstox_and_here(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        state = state_of((await auth.http.get("/authorize", headers=JSON)).json()["auth_url"])
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)
        await auth.http.get("/exchange-token", params={"code": code, "state": state})
        assert (await token_events.next()).event == "login"
        found = await SessionStore(redis_client).active_token()
        assert found is not None
        token = found[1]

        logout = await auth.http.post("/logout")  # no user: the active one
        session = (await auth.http.get("/session")).json()

    assert logout.status_code == 200
    assert logout.json() == {"logged_out": True, "user_id": "DEMO01", "upstox": "ok"}
    assert token not in logout.text
    assert session["logged_in"] is False
    assert await token_events.next() == TokenEvent(event="logout", user_id="DEMO01")
    assert await redis_client.keys("tickstream:session:*") == []
    async with UpstoxClient(simulator.http_url) as upstox:
        with pytest.raises(UpstoxAuthError):
            await upstox.profile(token)
