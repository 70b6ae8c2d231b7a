"""The Upstox session kept in Redis: one `StoredSession` per user plus which user is active.

auth writes sessions; the ingestor, the gateway and the CLI tools read the active token. Each
write is one MULTI/EXEC transaction that also publishes the `TokenEvent`, so a reader never sees
a session without its event or half a session; in a Redis Cluster the session, the active
pointer and the event's channel share one hash tag, so each transaction is in one slot. The
Redis TTL matches the token's expiry (the next 03:30 IST), so an expired token disappears by
itself.

With an encryption key (setting `TOKEN_ENCRYPTION_KEY`, a Fernet key) the token is stored as
Fernet ciphertext; every service that reads it needs the same key.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr, ValidationError
from redis.exceptions import WatchError

from shared.ist import next_token_expiry
from shared.redis_client import queue_publish
from shared.redis_contract import (
    ACTIVE_SESSION,
    TOKEN_EVENTS,
    StoredSession,
    TokenEvent,
    TokenEventKind,
    session_key,
)
from shared.resp import as_text
from shared.upstox.models import Profile, TokenResponse

__all__ = ["SessionDecryptError", "SessionStore"]

logger = logging.getLogger(__name__)


class SessionDecryptError(Exception):
    """A stored token cannot be read: encrypted but no key configured, or the wrong key."""


def _event(kind: TokenEventKind, user_id: str) -> str:
    return TokenEvent(event=kind, user_id=user_id).model_dump_json()


class SessionStore:
    """Reads and writes sessions; works with either `decode_responses` setting of the client."""

    def __init__(
        self, redis: aioredis.Redis, encryption_key: SecretStr | str | None = None
    ) -> None:
        self._redis = redis
        if isinstance(encryption_key, SecretStr):
            encryption_key = encryption_key.get_secret_value()
        self._fernet = Fernet(encryption_key) if encryption_key else None

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    # ---- writes --------------------------------------------------------------------------

    async def save(
        self,
        who: TokenResponse | Profile,
        access_token: str | SecretStr | None = None,
        *,
        now: dt.datetime | None = None,
    ) -> StoredSession:
        """Store a fresh login as the active session and announce it (event `login`).

        `who` is the token exchange's answer, or a profile plus the `access_token` it belongs to.
        """
        token = access_token if access_token is not None else getattr(who, "access_token", None)
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        if not token:
            raise ValueError("save() needs an access token")
        issued = now or dt.datetime.now(dt.UTC)
        expires = next_token_expiry(issued)
        ttl = max(1, math.ceil((expires - issued).total_seconds()))
        session = StoredSession(
            user_id=who.user_id,
            user_name=who.user_name,
            email=who.email,
            access_token=self._encrypt(token),
            encrypted=self._fernet is not None,
            issued_at=int(issued.timestamp()),
            expires_at=int(expires.timestamp()),
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(session_key(session.user_id), session.model_dump_json(), ex=ttl)
            pipe.set(ACTIVE_SESSION, session.user_id, ex=ttl)
            queue_publish(pipe, TOKEN_EVENTS, _event("login", session.user_id))
            await pipe.execute()
        logger.info("stored the session of %s until %s", session.user_id, expires.isoformat())
        return session

    async def mark_invalid(self, user_id: str, rejected_token: str | None = None) -> bool:
        """Record that Upstox refused the user's token (event `invalid`); the TTL is kept.

        With `rejected_token`, only that token is marked: a fresh login that replaced it in the
        meantime stays valid. Returns whether a session was marked.
        """
        key = session_key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    session = _parse(await pipe.get(key))
                    if session is None or not session.valid:
                        return False
                    if rejected_token is not None and self.decrypt(session) != rejected_token:
                        return False
                    marked = session.model_copy(update={"valid": False})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, marked.model_dump_json(), keepttl=True)
                    queue_publish(pipe, TOKEN_EVENTS, _event("invalid", user_id))
                    await pipe.execute()
                except WatchError:
                    continue  # the session changed under us: decide again on the new one
                logger.info("marked the session of %s invalid", user_id)
                return True

    async def restore(self, session: StoredSession) -> None:
        """Put back a session Redis lost (event `restored`): the session and the active pointer,
        expiring when the token does, in one transaction like a login."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                session_key(session.user_id), session.model_dump_json(), exat=session.expires_at
            )
            pipe.set(ACTIVE_SESSION, session.user_id, exat=session.expires_at)
            queue_publish(pipe, TOKEN_EVENTS, _event("restored", session.user_id))
            await pipe.execute()
        logger.info("restored the session of %s", session.user_id)

    async def delete(self, user_id: str) -> bool:
        """Forget the user's session (event `logout`); returns whether there was one."""
        existed, _ = await self._delete(user_id, announce_always=False)
        return existed

    async def end(self, user_id: str) -> int:
        """A logout Redis did not see (it was down): forget the user's session if Redis holds it
        (again), and announce the logout even if it does not, since a reader may still hold the
        token in memory. Returns how many subscribers the event reached."""
        _, listeners = await self._delete(user_id, announce_always=True)
        return listeners

    async def _delete(self, user_id: str, *, announce_always: bool) -> tuple[bool, int]:
        key = session_key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, ACTIVE_SESSION)
                    # Not `pipe.exists`: redis-py 8.1's cluster transaction splits EXISTS by
                    # slot and, while watching, drops the reply (answers the pipeline itself).
                    existed = bool(await pipe.execute_command("EXISTS", key))
                    active = await pipe.get(ACTIVE_SESSION)
                    is_active = active is not None and as_text(active) == user_id
                    if not existed and not is_active and not announce_always:
                        return False, 0  # leaving the block unwatches
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.delete(key)
                    if is_active:
                        pipe.delete(ACTIVE_SESSION)
                    queue_publish(pipe, TOKEN_EVENTS, _event("logout", user_id))
                    results = await pipe.execute()
                except WatchError:
                    continue
                logger.info("deleted the session of %s", user_id)
                return existed, int(results[-1])

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, user_id: str) -> StoredSession | None:
        return _parse(await self._redis.get(session_key(user_id)))

    async def active_user(self) -> str | None:
        value = await self._redis.get(ACTIVE_SESSION)
        return None if value is None else as_text(value)

    async def active(self) -> StoredSession | None:
        user_id = await self.active_user()
        return None if user_id is None else await self.get(user_id)

    async def active_token(self, now: dt.datetime | None = None) -> tuple[str, str] | None:
        """(user id, plaintext token) of the active session if it is valid and unexpired."""
        session = await self.active()
        moment = (now or dt.datetime.now(dt.UTC)).timestamp()
        if session is None or not session.valid or session.expires_at <= moment:
            return None
        return session.user_id, self.decrypt(session)

    def decrypt(self, session: StoredSession) -> str:
        """The session's plaintext token; raises `SessionDecryptError` if it cannot be read."""
        if not session.encrypted:
            return session.access_token
        if self._fernet is None:
            raise SessionDecryptError(
                f"the stored token of {session.user_id} is encrypted but TOKEN_ENCRYPTION_KEY "
                "is not set; set the key auth uses"
            )
        try:
            return self._fernet.decrypt(session.access_token.encode()).decode()
        except InvalidToken:
            raise SessionDecryptError(
                f"the stored token of {session.user_id} cannot be decrypted with this "
                "TOKEN_ENCRYPTION_KEY; it differs from the key auth uses"
            ) from None

    def _encrypt(self, token: str) -> str:
        if self._fernet is None:
            return token
        return self._fernet.encrypt(token.encode()).decode()


def _parse(raw: Any) -> StoredSession | None:
    if raw is None:
        return None
    try:
        return StoredSession.model_validate_json(raw)
    except ValidationError:
        # A value we cannot read is as good as no session; say so without quoting it.
        logger.warning("ignoring an unreadable stored session")
        return None
