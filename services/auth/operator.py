"""The operator's credential and session, as auth keeps them in Redis.

A one-time sign-in code (the link auth prints at start, or `tickstream operator-link` mints) and
an operator session (the `tickstream_operator` cookie) are random values whose sha256 alone is
stored, with a TTL: a copy of Redis signs nobody in. A code is spent with GETDEL, so of two
redemptions racing (two auth processes, two tabs) exactly one wins. A session holds the CSRF
token of its pages.

`Operators` also remembers, for the session's lifetime, the sessions this process has read or
opened, and answers from that memory only while Redis is unreachable: a logout must still work
then (auth's durable copy takes it), and the operator who asks is the one signed in here. A
session signed out on this process is forgotten at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from typing import Final
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from shared.redis_contract import OperatorSession, operator_code_key, operator_session_key
from shared.upstox.backoff import Backoff

__all__ = [
    "COOKIE",
    "Operators",
    "announce_link",
    "digest",
    "mint_code",
    "sign_in_link",
]

logger = logging.getLogger(__name__)

COOKIE: Final = "tickstream_operator"
# Where auth's own pages are at the public origin: the front and nginx route /auth/... to auth.
SIGN_IN_PATH: Final = "/auth/operator"
_MAX_SECRET: Final = 200  # longer than anything minted here: refused unread


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def mint_code(redis: aioredis.Redis, ttl_seconds: int) -> str:
    """A new one-time sign-in code, stored (hashed) for `ttl_seconds`."""
    code = secrets.token_urlsafe(32)
    await redis.set(operator_code_key(digest(code)), "1", ex=ttl_seconds)
    return code


def sign_in_link(redirect_uri: str, code: str) -> str:
    """The link that redeems `code`, at the public origin users reach (the redirect URI's)."""
    parts = urlsplit(redirect_uri)
    return f"{parts.scheme}://{parts.netloc}{SIGN_IN_PATH}?code={code}"


async def announce_link(
    redis: aioredis.Redis, redirect_uri: str, minutes: int, backoff: Backoff
) -> None:
    """Mint a code and log its link, once (retrying while Redis is unreachable): the one log
    line that carries a secret, on purpose, as Jupyter's start does."""
    while True:
        try:
            code = await mint_code(redis, minutes * 60)
        except (RedisError, OSError) as error:
            delay = backoff.next_delay()
            logger.warning(
                "cannot store an operator sign-in code yet (%s); retrying in %.1fs",
                type(error).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        logger.info(
            "operator sign-in link (single use, valid %d min): %s",
            minutes,
            sign_in_link(redirect_uri, code),
        )
        return


class Operators:
    """Redeems codes, and opens, reads and ends operator sessions."""

    def __init__(self, redis: aioredis.Redis, lifetime_seconds: int, remembered: int = 64) -> None:
        self._redis = redis
        self._lifetime = lifetime_seconds
        self._remembered = remembered
        # session digest -> (session, when it ends on time.time()); for Redis outages only
        self._seen: OrderedDict[str, tuple[OperatorSession, float]] = OrderedDict()

    @property
    def lifetime_seconds(self) -> int:
        return self._lifetime

    async def redeem(self, code: str) -> bool:
        """Whether `code` was a live sign-in code; it is spent either way."""
        if not code or len(code) > _MAX_SECRET:
            return False
        return await self._redis.getdel(operator_code_key(digest(code))) is not None

    async def open(self) -> tuple[str, OperatorSession]:
        """A new session: (the cookie's value, the session)."""
        session_id = secrets.token_urlsafe(32)
        session = OperatorSession(csrf_token=secrets.token_urlsafe(32), created_at=int(time.time()))
        key = digest(session_id)
        await self._redis.set(
            operator_session_key(key), session.model_dump_json(), ex=self._lifetime
        )
        self._remember(key, session)
        return session_id, session

    async def read(self, session_id: str | None) -> OperatorSession | None:
        """The session a cookie names, or None (no cookie, unknown, ended or expired)."""
        if not session_id or len(session_id) > _MAX_SECRET:
            return None
        key = digest(session_id)
        try:
            raw = await self._redis.get(operator_session_key(key))
        except RedisError:
            return self._recall(key)
        if raw is None:
            self._seen.pop(key, None)
            return None
        try:
            session = OperatorSession.model_validate_json(raw)
        except ValidationError:
            return None
        self._remember(key, session)
        return session

    async def close(self, session_id: str) -> None:
        key = digest(session_id)
        self._seen.pop(key, None)
        await self._redis.delete(operator_session_key(key))

    def _remember(self, key: str, session: OperatorSession) -> None:
        self._seen.pop(key, None)
        self._seen[key] = (session, session.created_at + self._lifetime)
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)

    def _recall(self, key: str) -> OperatorSession | None:
        found = self._seen.get(key)
        if found is None or found[1] <= time.time():
            return None
        logger.warning("Redis is unreachable: the operator session is taken from memory")
        return found[0]
