"""auth keeps a durable copy of the login (AUTH_STATE_DIR) and brings Redis back in line with it:
a lost session is restored, the environment token stored again, a logout taken while Redis is
down and applied once it is back, and a logged-out or refused session never comes back.

auth runs under uvicorn against the simulator and the session's real Redis; Redis "loses its
data" by FLUSHALL or by being stopped and started (it keeps no files). The restore rounds are
called directly (`Restorer.round`) where a test must know a round has run; one test lets the
loop find the loss by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from services.auth.durable import LOGOUTS_FILE, SESSION_FILE
from services.auth.recovery import ApplyLogout, Restore
from services.auth.restore import Restorer
from shared.redis_contract import TokenEvent, session_key
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError
from tests.auth.conftest import (
    RunningAuth,
    TokenEvents,
    auth_settings,
    dialog_login,
    listening,
    running_auth,
    sign_in_as_operator,
)
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually

QUIET = 60.0  # a restore interval no test waits for: rounds are run by hand


async def browser_login(
    auth: RunningAuth, simulator: SimulatorHandle, user_id: str | None = None
) -> None:
    done = await dialog_login(auth, simulator, user_id=user_id)
    assert done.status_code == 200, done.text


async def round_of(auth: RunningAuth) -> list[Any]:
    return await Restorer(auth.context).round()


@contextlib.asynccontextmanager
async def environment_login(
    simulator: SimulatorHandle, redis_url: str, **overrides: Any
) -> AsyncIterator[RunningAuth]:
    """auth given the simulator's demo token as UPSTOX_ACCESS_TOKEN, once it has stored it."""
    values: dict[str, Any] = {"auth_restore_interval_seconds": QUIET, **overrides}
    token = simulator.demo_token
    settings = auth_settings(redis_url, simulator.http_url, upstox_access_token=token, **values)
    async with running_auth(settings) as auth:
        assert auth.context.bootstrap is not None
        assert await auth.context.bootstrap == "stored"
        yield auth


@pytest.fixture
async def auth(
    simulator: SimulatorHandle, redis_url: str, tmp_path: Path
) -> AsyncIterator[RunningAuth]:
    """auth keeping its copy in `tmp_path`, DEMO01 logged in, restore rounds run by hand."""
    async with logged_in(simulator, redis_url, tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def redis_down(server: Any, client: aioredis.Redis) -> AsyncIterator[None]:
    """Redis stopped for the block, then started again, empty (it keeps no files)."""
    server.stop()
    try:
        yield
    finally:
        server.start()
        await client.connection_pool.disconnect()  # its sockets died with the server


@contextlib.asynccontextmanager
async def logged_in(
    simulator: SimulatorHandle, redis_url: str, state_dir: Path, **overrides: Any
) -> AsyncIterator[RunningAuth]:
    """auth keeping its copy in `state_dir`, restore rounds by hand, DEMO01 logged in."""
    values: dict[str, Any] = {"auth_restore_interval_seconds": QUIET, **overrides}
    settings = auth_settings(redis_url, simulator.http_url, auth_state_dir=state_dir, **values)
    async with running_auth(settings) as auth:
        await browser_login(auth, simulator)
        yield auth


async def test_a_login_redis_lost_is_restored_from_the_encrypted_copy(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = Fernet.generate_key().decode()
    store = SessionStore(redis_client, key)
    async with logged_in(simulator, redis_url, tmp_path, token_encryption_key=key) as auth:
        assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
        stored = await store.active()
        assert stored is not None
        token = store.decrypt(stored)
        copy = (tmp_path / SESSION_FILE).read_bytes()
        assert token.encode() not in copy  # encrypted with TOKEN_ENCRYPTION_KEY

        await redis_client.flushall()  # Redis lost its data
        assert await round_of(auth) == [Restore(stored)]

        assert await token_events.next() == TokenEvent(event="restored", user_id="DEMO01")
        assert await store.active_token() == ("DEMO01", token)
        assert await store.active() == stored  # the same login, expiry and all
        assert 0 < await redis_client.ttl(session_key("DEMO01")) <= stored.expires_at
        assert (await auth.http.get("/session")).json()["logged_in"] is True
        assert await round_of(auth) == []  # in line now
        metrics = (await auth.http.get("/metrics")).text
    assert 'tickstream_auth_recovery_total{event="restored"} 1.0' in metrics
    assert token not in caplog.text


async def test_the_loop_finds_the_loss_by_itself_and_after_a_restart(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
    tmp_path: Path,
) -> None:
    fast = {"auth_restore_interval_seconds": 0.1}
    async with logged_in(simulator, redis_url, tmp_path, **fast):
        assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
        await redis_client.flushall()
        assert await token_events.next() == TokenEvent(event="restored", user_id="DEMO01")
        assert await SessionStore(redis_client).active_user() == "DEMO01"
    await redis_client.flushall()  # Redis and auth both went down; Redis came back empty
    settings = auth_settings(redis_url, simulator.http_url, auth_state_dir=tmp_path, **fast)
    async with running_auth(settings):
        assert await token_events.next() == TokenEvent(event="restored", user_id="DEMO01")


async def test_the_environment_token_is_stored_again_when_missing(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    token_events: TokenEvents,
) -> None:
    # no AUTH_STATE_DIR: the environment is the only durable source
    async with environment_login(simulator, redis_url) as auth:
        assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
        await redis_client.flushall()
        await round_of(auth)
        assert await token_events.next() == TokenEvent(event="login", user_id="DEMO01")
        assert await SessionStore(redis_client).active_token() == ("DEMO01", simulator.demo_token)

        # After a logout it stays logged out (and Upstox revoked the token anyway).
        await sign_in_as_operator(auth)  # the flush ended the operator's session too
        assert (await auth.http.post("/logout")).status_code == 200
        assert await token_events.next() == TokenEvent(event="logout", user_id="DEMO01")
        await round_of(auth)
        await token_events.assert_quiet()
        assert await SessionStore(redis_client).active() is None


async def test_the_environment_token_never_replaces_a_login_that_was_logged_out(
    simulator: SimulatorHandle,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    async with environment_login(simulator, redis_url, auth_state_dir=tmp_path) as auth:
        await browser_login(auth, simulator, user_id="DEMO02")  # replaces the environment's
        assert (await auth.http.post("/logout")).json()["user_id"] == "DEMO02"
        assert await round_of(auth) == []
        assert await SessionStore(redis_client).active() is None


async def test_a_logout_is_never_undone_by_a_restore(
    auth: RunningAuth, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    assert (tmp_path / SESSION_FILE).exists()
    logout = await auth.http.post("/logout", json={"user_id": "DEMO01"})
    assert (logout.status_code, logout.json()["upstox"]) == (200, "ok")
    assert not (tmp_path / SESSION_FILE).exists()
    assert not (tmp_path / LOGOUTS_FILE).exists()  # Redis saw it: nothing pending
    await redis_client.flushall()
    assert await round_of(auth) == []
    assert await SessionStore(redis_client).active() is None


async def test_a_refused_token_is_marked_in_the_copy_and_not_restored(
    auth: RunningAuth, redis_client: aioredis.Redis
) -> None:
    # The ingestor found Upstox refusing the token and said so in Redis.
    assert await SessionStore(redis_client).mark_invalid("DEMO01")
    await round_of(auth)
    copy = auth.context.keeper.session()
    assert copy is not None and not copy.valid
    await redis_client.flushall()
    assert await round_of(auth) == []
    assert await SessionStore(redis_client).active() is None


async def test_a_logout_while_redis_is_down_is_taken_and_applied_once_it_is_back(
    auth: RunningAuth,
    simulator: SimulatorHandle,
    redis_server: Any,
    redis_client: aioredis.Redis,
) -> None:
    stored = await SessionStore(redis_client).active()
    assert stored is not None

    async with redis_down(redis_server, redis_client):
        logout = await auth.http.post("/logout")  # no user given: the copy's
        pending = auth.context.keeper.logouts()
    assert logout.status_code == 200, logout.text
    assert logout.json() == {"logged_out": True, "user_id": "DEMO01", "upstox": "ok"}
    with pytest.raises(UpstoxAuthError):  # revoked at Upstox with the copy's token
        async with UpstoxClient(simulator.http_url) as upstox:
            await upstox.profile(stored.access_token)
    assert list(pending) == ["DEMO01"]
    assert auth.context.keeper.session() is None

    # Redis came back from a snapshot that still holds the session.
    await SessionStore(redis_client).restore(stored)
    # Nobody listens yet (the ingestor has not noticed Redis is back): applied, but kept.
    assert await round_of(auth) == [ApplyLogout("DEMO01", pending["DEMO01"])]
    assert await SessionStore(redis_client).active() is None
    assert await redis_client.get(session_key("DEMO01")) is None
    assert auth.context.keeper.logouts() == pending

    async with listening(redis_client) as events:
        await round_of(auth)
        assert await events.next() == TokenEvent(event="logout", user_id="DEMO01")
    assert auth.context.keeper.logouts() == {}  # heard: done
    assert await round_of(auth) == []
    metrics = (await auth.http.get("/metrics")).text
    assert 'tickstream_auth_recovery_total{event="logout_deferred"} 1.0' in metrics
    assert 'tickstream_auth_recovery_total{event="logout_applied"} 1.0' in metrics


async def test_without_a_state_dir_a_logout_while_redis_is_down_is_refused(
    simulator: SimulatorHandle, redis_server: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = auth_settings(redis_url, simulator.http_url, auth_restore_interval_seconds=QUIET)
    async with running_auth(settings) as auth, redis_down(redis_server, redis_client):
        logout = await auth.http.post("/logout", json={"user_id": "DEMO01"})
    assert (logout.status_code, logout.json()["error"]) == (503, "store_unavailable")


async def test_a_login_while_a_logout_is_pending_voids_it(
    auth: RunningAuth, simulator: SimulatorHandle, redis_server: Any, redis_client: aioredis.Redis
) -> None:
    async with redis_down(redis_server, redis_client):
        assert (await auth.http.post("/logout")).status_code == 200
    await sign_in_as_operator(auth)  # Redis came back empty: the operator signs in again
    await browser_login(auth, simulator)  # the same user again, before a round ran
    assert auth.context.keeper.logouts() == {}
    assert await round_of(auth) == []
    assert await SessionStore(redis_client).active_user() == "DEMO01"


async def test_the_loop_survives_redis_going_away(
    simulator: SimulatorHandle,
    redis_server: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    fast = {"auth_restore_interval_seconds": 0.1}
    async with logged_in(simulator, redis_url, tmp_path, **fast) as auth:
        async with redis_down(redis_server, redis_client):
            await asyncio.sleep(0.5)  # a few failed rounds
        await eventually(
            lambda: SessionStore(redis_client).active_user(), "the session restored by the loop"
        )
        assert auth.context.restorer is not None and not auth.context.restorer.done()
