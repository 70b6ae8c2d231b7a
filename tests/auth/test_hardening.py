"""auth safe to expose: no page can be framed, the active-session pointer is not a user's
session, `/authorize` takes only a short same-site `next` and a limited rate per client
address. The real auth app with a real Redis and the simulator as Upstox."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.auth.limits import AuthorizeLimit
from services.auth.recovery import Restore
from services.auth.state import MAX_NEXT_LENGTH
from shared.redis_contract import ACTIVE_SESSION, TokenEvent, oauth_state_key, session_key
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient
from tests.auth.conftest import (
    RunningAuth,
    TokenEvents,
    auth_settings,
    dialog_login,
    running_auth,
)
from tests.auth.test_auth_login import HTML, JSON
from tests.auth.test_restore import QUIET, round_of
from tests.support.simulator import SimulatorHandle


async def log_in(auth: RunningAuth, simulator: SimulatorHandle, next_url: str | None = None) -> str:
    """A whole login through the simulated dialog; the callback's Location."""
    done = await dialog_login(auth, simulator, next_url=next_url, json=False)
    assert done.status_code == 303
    return done.headers["location"]


async def test_logout_of_user_active_touches_neither_the_pointer_nor_the_token(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        await log_in(auth, simulator)
        assert (await token_events.next()).event == "login"

        refused = await auth.http.post("/logout", params={"user_id": "active"})
        form = await auth.http.post("/logout", data={"user_id": "active"})
        session = (await auth.http.get("/session")).json()

    assert (refused.status_code, refused.json()["error"]) == (404, "no_session")
    assert form.status_code == 404
    assert await redis_client.get(ACTIVE_SESSION) == b"DEMO01"
    assert (session["logged_in"], session["user_id"], session["valid"]) == (True, "DEMO01", True)
    await token_events.assert_quiet()
    found = await SessionStore(redis_client).active_token()
    assert found is not None
    async with UpstoxClient(simulator.http_url) as upstox:
        assert (await upstox.profile(found[1])).user_id == "DEMO01"  # not revoked


async def test_a_session_under_its_former_name_comes_back_from_the_durable_copy(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    tmp_path: Path,
) -> None:
    settings = auth_settings(
        redis_url,
        simulator.http_url,
        auth_state_dir=tmp_path,
        auth_restore_interval_seconds=QUIET,
    )
    store = SessionStore(redis_client)
    async with running_auth(settings) as auth:
        await log_in(auth, simulator)
        assert (await token_events.next()).event == "login"
        stored = await store.active()
        assert stored is not None
        # Redis as the previous release left it: the session under `session:{user_id}` (the
        # former layout, spelled here only), the pointer where it always was.
        await redis_client.rename(session_key("DEMO01"), "tickstream:session:DEMO01")
        assert await store.active() is None  # the former name is not read

        assert await round_of(auth) == [Restore(stored)]
        assert await token_events.next() == TokenEvent(event="restored", user_id="DEMO01")
        assert await store.active() == stored
        assert (await auth.http.get("/session")).json()["logged_in"] is True


async def test_no_answer_of_auth_may_be_framed(simulator: SimulatorHandle, redis_url: str) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        answers = [
            await auth.http.get("/", headers=HTML),
            await auth.http.get("/authorize", headers=HTML),
            await auth.http.get("/exchange-token", params={"state": "x"}, headers=HTML),
            await auth.http.get("/session"),
            await auth.http.post("/logout", headers=HTML),
            await auth.http.get("/healthz"),
        ]
    assert [answer.status_code for answer in answers] == [200, 302, 400, 200, 404, 200]
    for answer in answers:
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "javascript:alert(1)",
        "/" + "a" * MAX_NEXT_LENGTH,
    ],
)
async def test_a_next_that_is_not_a_short_same_site_path_is_refused(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis, next_url: str
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        refused = await auth.http.get("/authorize", params={"next": next_url}, headers=JSON)
        page = await auth.http.get("/authorize", params={"next": next_url}, headers=HTML)
        metrics = (await auth.http.get("/metrics")).text
    assert (refused.status_code, refused.json()["error"]) == (400, "bad_next")
    assert page.status_code == 400 and "location" not in page.headers
    assert 'tickstream_auth_login_starts_refused_total{reason="bad_next"} 2.0' in metrics
    assert await redis_client.keys(oauth_state_key("*")) == []  # nothing stored


async def test_a_same_site_next_is_where_the_login_returns(
    simulator: SimulatorHandle, redis_url: str
) -> None:
    async with running_auth(auth_settings(redis_url, simulator.http_url)) as auth:
        assert await log_in(auth, simulator, "/ui/?watch=NSE_INDEX%7CNifty%2050#x") == (
            "/ui/?watch=NSE_INDEX%7CNifty%2050#x"
        )
        assert await log_in(auth, simulator, "/" + "a" * (MAX_NEXT_LENGTH - 1)) == (
            "/" + "a" * (MAX_NEXT_LENGTH - 1)
        )


async def test_authorize_beyond_its_rate_is_answered_429_and_stores_nothing(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = auth_settings(redis_url, simulator.http_url, auth_authorize_per_minute=2)
    async with running_auth(settings) as auth:
        admitted = [await auth.http.get("/authorize", headers=JSON) for _ in range(2)]
        refused = await auth.http.get("/authorize", headers=JSON)
        page = await auth.http.get("/authorize", headers=HTML)
        other = await auth.http.get("/session")  # only starting a login is limited
        metrics = (await auth.http.get("/metrics")).text

    assert [answer.status_code for answer in admitted] == [200, 200]
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_logins")
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # one start refills in 30 s
    assert page.status_code == 429 and "location" not in page.headers
    assert other.status_code == 200
    assert 'tickstream_auth_login_starts_refused_total{reason="rate"} 2.0' in metrics
    assert "tickstream_auth_login_starts_total 2.0" in metrics
    assert len(await redis_client.keys(oauth_state_key("*"))) == 2


def test_the_limit_is_per_address_refills_at_its_rate_and_forgets_the_idlest() -> None:
    limit = AuthorizeLimit(per_minute=6, max_clients=2)  # one start every 10 s, 6 at once
    assert [limit.take("a", 0.0) for _ in range(6)] == [0] * 6
    assert limit.take("a", 0.0) == 10
    assert limit.take("a", 4.0) == 6  # 0.4 of a start refilled
    assert limit.take("b", 4.0) == 0  # another address has its own bucket
    assert limit.take("a", 10.0) == 0
    assert limit.take("a", 10.0) == 10
    assert limit.take("c", 11.0) == 0  # a third address: "b", seen longest ago, is forgotten
    assert len(limit) == 2
    assert [limit.take("b", 11.0) for _ in range(6)] == [0] * 6  # a full bucket again
    assert limit.take("a", 11.0) == 0  # "a" was dropped by "b" meanwhile: full again
