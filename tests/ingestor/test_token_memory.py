"""A session that vanishes from the store without a logout (Redis lost it) does not stop the
feed: the pure rule (`tokens.TokenChoice`), then a real ingestor against the simulator and a
real Redis whose data is wiped under it."""

from __future__ import annotations

import functools

import pytest
import redis.asyncio as aioredis

from services.ingestor.service import Ingestor
from services.ingestor.tokens import TokenChoice
from shared.redis_contract import StoredSession
from shared.sessions import SessionStore
from tests.ingestor.conftest import USER, StartIngestor, connection_ids
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually

NOW = 1_700_000_000


def stored(token: str = "tok-1", user: str = USER, **changes: object) -> StoredSession:
    values: dict[str, object] = {
        "user_id": user,
        "access_token": token,
        "issued_at": NOW - 60,
        "expires_at": NOW + 3600,
    }
    values.update(changes)
    return StoredSession.model_validate(values)


# ---- the rule ----------------------------------------------------------------------------------


def test_the_stores_token_is_used_and_held() -> None:
    choice = TokenChoice()
    assert choice.choose(None, None, NOW) == (None, False)
    assert choice.choose(stored(), "tok-1", NOW) == ((USER, "tok-1"), False)
    assert choice.held_user == USER
    # the store lost everything: the held token, said to be the held one
    assert choice.choose(None, None, NOW) == ((USER, "tok-1"), True)


def test_a_logout_or_invalid_event_for_the_held_user_ends_it() -> None:
    for kind in ("logout", "invalid"):
        choice = TokenChoice()
        choice.choose(stored(), "tok-1", NOW)
        choice.event("login", USER)
        choice.event(kind, "SOMEONE-ELSE")
        assert choice.held_user == USER
        choice.event(kind, USER)
        assert choice.choose(None, None, NOW) == (None, False)


def test_a_refused_expired_or_forgotten_token_is_not_used() -> None:
    choice = TokenChoice()
    choice.choose(stored(), "tok-1", NOW)
    assert choice.choose(None, None, NOW, rejected="tok-1") == (None, False)
    assert choice.choose(None, None, NOW + 3600) == (None, False)
    choice.forget()
    assert choice.choose(None, None, NOW) == (None, False)


def test_whatever_the_store_holds_wins_over_the_memory() -> None:
    choice = TokenChoice()
    choice.choose(stored(), "tok-1", NOW)
    assert choice.choose(stored("tok-2", "OTHER"), "tok-2", NOW) == (("OTHER", "tok-2"), False)
    for unusable in (stored(valid=False), stored(expires_at=NOW)):
        choice = TokenChoice()
        choice.choose(stored(), "tok-1", NOW)
        assert choice.choose(unusable, "tok-1", NOW) == (None, False)
        assert choice.choose(None, None, NOW) == (None, False)  # and the memory is gone
    choice = TokenChoice()
    choice.choose(stored(), "tok-1", NOW)
    assert choice.choose(stored(), None, NOW) == (None, False)  # unreadable (wrong key)
    assert choice.choose(None, None, NOW) == (None, False)


# ---- a real ingestor ---------------------------------------------------------------------------


@pytest.fixture
async def feeding(logged_in: str, start_ingestor: StartIngestor) -> Ingestor:
    """An ingestor connected upstream with the stored session's token."""
    ingestor: Ingestor = await start_ingestor()
    await eventually(lambda: ingestor.upstream_connected, "upstream connected")
    return ingestor


async def _reconnected(sim: SimulatorHandle, before: list[int]) -> bool:
    now = await connection_ids(sim)
    return len(now) == 1 and now != before


async def test_after_redis_lost_the_session_a_reconnect_keeps_the_token(
    simulator: SimulatorHandle, redis_client: aioredis.Redis, feeding: Ingestor
) -> None:
    before = await connection_ids(simulator)

    await redis_client.flushall()  # the session vanished, with no logout event
    await simulator.drop_connections()  # and the upstream drops: a reconnect needs a token

    await eventually(functools.partial(_reconnected, simulator, before), "reconnected")
    assert await SessionStore(redis_client).active() is None  # nobody logged in again
    assert feeding.upstream_connected


async def test_after_a_logout_a_reconnect_waits_for_a_login(
    simulator: SimulatorHandle, redis_client: aioredis.Redis, feeding: Ingestor
) -> None:
    # Redis lost the session; then the logout made meanwhile is announced (as auth does once
    # Redis is back): the feed closes, and the token is not used again.
    await redis_client.flushall()
    assert await SessionStore(redis_client).end(USER) >= 1
    await eventually(lambda: feeding.state == "waiting_token", "waiting for a login")
    assert not await connection_ids(simulator)
