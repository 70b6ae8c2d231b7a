"""OAuth `state`: random, kept server side with a short TTL, usable once."""

from __future__ import annotations

import re
import secrets
import time
from typing import Final

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


# Where a login may return: a path on this site (RFC 3986 path, query and fragment characters;
# no scheme, no `//host`, no backslash, no whitespace or control character a browser would
# strip into `//host`), short enough that each stored OAuth state stays small.
MAX_NEXT_LENGTH: Final = 512
_SAME_SITE_PATH: Final = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/%?#]*")


def safe_next_url(value: str | None, default: str) -> str | None:
    """`value` when it is a same-site path (an open redirect would leak the flow), `default`
    when none was given, None when it must be refused."""
    if value is None or value == "":
        return default
    if len(value) <= MAX_NEXT_LENGTH and _SAME_SITE_PATH.fullmatch(value):
        return value
    return None
