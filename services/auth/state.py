"""OAuth `state`: random, kept server side with a short TTL, usable once."""

from __future__ import annotations

import secrets
import time

import redis.asyncio as aioredis
from pydantic import ValidationError

from shared.redis_contract import OAuthState, oauth_state_key


async def new_state(redis: aioredis.Redis, ttl_seconds: int, next_url: str) -> str:
    state = secrets.token_urlsafe(32)
    record = OAuthState(created_at=int(time.time()), next_url=next_url)
    await redis.set(oauth_state_key(state), record.model_dump_json(), ex=ttl_seconds, nx=True)
    return state


async def consume_state(redis: aioredis.Redis, state: str) -> OAuthState | None:
    """The state's record, deleted in the same step so a replay finds nothing."""
    if not state or len(state) > 200:
        return None
    raw = await redis.getdel(oauth_state_key(state))
    if raw is None:
        return None
    try:
        return OAuthState.model_validate_json(raw)
    except ValidationError:
        return None


def safe_next_url(value: str | None, default: str) -> str:
    """Only same-site paths may follow a login (an open redirect would leak the flow)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default
