"""The session store against a real Redis: TTL to 03:30 IST, events, encryption, invalidation."""

from __future__ import annotations

import datetime as dt

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from pydantic import SecretStr

from shared.ist import IST, next_token_expiry
from shared.redis_contract import ACTIVE_SESSION, TokenEvent, session_key
from shared.sessions import SessionDecryptError, SessionStore
from shared.upstox.models import Profile, TokenResponse
from tests.auth.conftest import TokenEvents

TOKEN = "sim-access-token-0123456789abcdef"


def token_response(user_id: str = "AB1234", token: str = TOKEN) -> TokenResponse:
    return TokenResponse.model_validate(
        {
            "access_token": token,
            "user_id": user_id,
            "user_name": "Asha Rao",
            "email": "asha@example.com",
            "broker": "UPSTOX",
            "extra_field_from_upstox": 1,
        }
    )


# ---- next 03:30 IST --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issued", "expected"),
    [
        (dt.datetime(2025, 1, 10, 2, 30, tzinfo=IST), dt.datetime(2025, 1, 10, 3, 30, tzinfo=IST)),
        (dt.datetime(2025, 1, 10, 3, 30, tzinfo=IST), dt.datetime(2025, 1, 11, 3, 30, tzinfo=IST)),
        (dt.datetime(2025, 1, 10, 15, 0, tzinfo=IST), dt.datetime(2025, 1, 11, 3, 30, tzinfo=IST)),
        # 21:00 UTC is 02:30 IST the next day.
        (
            dt.datetime(2025, 1, 9, 21, 0, tzinfo=dt.UTC),
            dt.datetime(2025, 1, 10, 3, 30, tzinfo=IST),
        ),
        (dt.datetime(2025, 12, 31, 23, 59, tzinfo=IST), dt.datetime(2026, 1, 1, 3, 30, tzinfo=IST)),
    ],
)
def test_next_token_expiry(issued: dt.datetime, expected: dt.datetime) -> None:
    assert next_token_expiry(issued) == expected
    assert next_token_expiry(issued).utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_next_token_expiry_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_token_expiry(dt.datetime(2025, 1, 10, 2, 30))


# ---- save ------------------------------------------------------------------------------------


async def test_save_stores_session_and_active_user_with_ttl_to_expiry_and_announces_it(
    redis_client: aioredis.Redis, token_events: TokenEvents
) -> None:
    store = SessionStore(redis_client)
    issued = dt.datetime(2025, 1, 10, 2, 30, tzinfo=IST)  # one hour before 03:30 IST

    session = await store.save(token_response(), now=issued)

    assert session.user_id == "AB1234"
    assert session.user_name == "Asha Rao"
    assert session.email == "asha@example.com"
    assert session.issued_at == int(issued.timestamp())
    assert session.expires_at == int(dt.datetime(2025, 1, 10, 3, 30, tzinfo=IST).timestamp())
    assert session.valid and not session.encrypted
    # The TTL is what is left until 03:30 IST (an hour), give or take the test's own runtime.
    assert 3500 < await redis_client.ttl(session_key("AB1234")) <= 3600
    assert 3500 < await redis_client.ttl(ACTIVE_SESSION) <= 3600
    assert await redis_client.get(ACTIVE_SESSION) == b"AB1234"
    assert await store.get("AB1234") == session
    assert await store.active() == session
    assert await token_events.next() == TokenEvent(event="login", user_id="AB1234")


async def test_save_from_a_profile_needs_the_token(redis_client: aioredis.Redis) -> None:
    store = SessionStore(redis_client)
    profile = Profile(user_id="CD5678", user_name="Ravi")
    with pytest.raises(ValueError, match="access token"):
        await store.save(profile)
    assert await store.get("CD5678") is None

    session = await store.save(profile, SecretStr(TOKEN))
    assert store.decrypt(session) == TOKEN
    assert await store.active_token() == ("CD5678", TOKEN)


async def test_a_new_login_becomes_the_active_session(redis_client: aioredis.Redis) -> None:
    store = SessionStore(redis_client)
    await store.save(token_response("AB1234", "token-one"))
    await store.save(token_response("CD5678", "token-two"))
    assert await store.active_token() == ("CD5678", "token-two")
    assert await store.get("AB1234") is not None


# ---- encryption at rest -----------------------------------------------------------------------


async def test_token_is_encrypted_at_rest_with_a_key(redis_client: aioredis.Redis) -> None:
    key = Fernet.generate_key().decode()
    store = SessionStore(redis_client, SecretStr(key))

    session = await store.save(token_response())

    raw = await redis_client.get(session_key("AB1234"))
    assert raw is not None
    assert TOKEN.encode() not in raw
    assert session.encrypted
    assert store.decrypt(session) == TOKEN
    assert await store.active_token() == ("AB1234", TOKEN)


async def test_reading_an_encrypted_token_without_or_with_the_wrong_key_fails_clearly(
    redis_client: aioredis.Redis,
) -> None:
    await SessionStore(redis_client, Fernet.generate_key().decode()).save(token_response())

    with pytest.raises(SessionDecryptError, match="TOKEN_ENCRYPTION_KEY is not set") as unset:
        await SessionStore(redis_client).active_token()
    with pytest.raises(SessionDecryptError, match="cannot be decrypted") as wrong:
        await SessionStore(redis_client, Fernet.generate_key().decode()).active_token()
    assert TOKEN not in str(unset.value) + str(wrong.value)


# ---- invalidation and deletion ---------------------------------------------------------------


async def test_mark_invalid_keeps_the_ttl_and_announces_it(
    redis_client: aioredis.Redis, token_events: TokenEvents
) -> None:
    store = SessionStore(redis_client)
    await store.save(token_response())
    assert (await token_events.next()).event == "login"
    ttl_before = await redis_client.ttl(session_key("AB1234"))

    assert await store.mark_invalid("AB1234", TOKEN)

    session = await store.get("AB1234")
    assert session is not None and not session.valid
    assert 0 < await redis_client.ttl(session_key("AB1234")) <= ttl_before
    assert await store.active_token() is None
    assert await token_events.next() == TokenEvent(event="invalid", user_id="AB1234")
    # Marking again changes nothing and says nothing.
    assert not await store.mark_invalid("AB1234")
    await token_events.assert_quiet()


async def test_mark_invalid_spares_a_newer_token(
    redis_client: aioredis.Redis, token_events: TokenEvents
) -> None:
    store = SessionStore(redis_client)
    await store.save(token_response(token="fresh-token"))
    await token_events.next()

    assert not await store.mark_invalid("AB1234", rejected_token="old-token")

    assert await store.active_token() == ("AB1234", "fresh-token")
    await token_events.assert_quiet()
    assert not await store.mark_invalid("nobody")


async def test_delete_forgets_the_session_and_the_active_user(
    redis_client: aioredis.Redis, token_events: TokenEvents
) -> None:
    store = SessionStore(redis_client)
    await store.save(token_response())
    await token_events.next()

    assert await store.delete("AB1234")

    assert await store.get("AB1234") is None
    assert await redis_client.exists(ACTIVE_SESSION) == 0
    assert await token_events.next() == TokenEvent(event="logout", user_id="AB1234")
    assert not await store.delete("AB1234")
    await token_events.assert_quiet()


async def test_deleting_another_user_keeps_the_active_one(redis_client: aioredis.Redis) -> None:
    store = SessionStore(redis_client)
    await store.save(token_response("AB1234", "token-one"))
    await store.save(token_response("CD5678", "token-two"))

    assert await store.delete("AB1234")

    assert await store.active_token() == ("CD5678", "token-two")


async def test_an_expired_session_gives_no_token(redis_client: aioredis.Redis) -> None:
    store = SessionStore(redis_client)
    session = await store.save(token_response())
    after_expiry = dt.datetime.fromtimestamp(session.expires_at + 1, tz=dt.UTC)
    assert await store.active_token(now=after_expiry) is None


async def test_an_unreadable_stored_value_counts_as_no_session(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.set(session_key("AB1234"), b"{not json")
    await redis_client.set(ACTIVE_SESSION, b"AB1234")
    store = SessionStore(redis_client)
    assert await store.get("AB1234") is None
    assert await store.active_token() is None
