"""A token from the environment (`UPSTOX_ACCESS_TOKEN`) is checked with Upstox and stored.

Runs in the background so auth serves at once; while Upstox or Redis is unreachable it retries
with backoff, and a token Upstox refuses is dropped with one clear log line (without the token).
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from services.auth.context import AuthContext
from services.auth.metrics import EnvTokenOutcome
from shared.ist import format_ist
from shared.sessions import SessionDecryptError
from shared.upstox.backoff import Backoff
from shared.upstox.errors import UpstoxAuthError, UpstoxError

logger = logging.getLogger(__name__)


async def bootstrap_env_token(
    context: AuthContext, token: str, backoff: Backoff
) -> EnvTokenOutcome:
    """'stored', 'unchanged' (already the active valid session) or 'refused'."""
    while True:
        try:
            outcome: EnvTokenOutcome = await _check_and_store(context, token)
        except UpstoxAuthError as error:
            logger.warning(
                "UPSTOX_ACCESS_TOKEN was refused by Upstox (%s); ignoring it: log in through "
                "/authorize or set a fresh token",
                error.describe(),
            )
            outcome = "refused"
        except (UpstoxError, RedisError, OSError) as error:
            delay = backoff.next_delay()
            logger.warning(
                "cannot check UPSTOX_ACCESS_TOKEN yet (%s: %s); retrying in %.1fs",
                type(error).__name__,
                error,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        context.metrics.env_token[outcome] += 1
        return outcome


async def _check_and_store(context: AuthContext, token: str) -> EnvTokenOutcome:
    try:
        current = await context.store.active_token()
    except SessionDecryptError:
        current = None  # an unreadable session will be replaced by this one
    if current is not None and current[1] == token:
        logger.info("UPSTOX_ACCESS_TOKEN is already the active session (%s)", current[0])
        return "unchanged"
    profile = await context.upstox.profile(token)
    session = await context.store.save(profile, token)
    logger.info(
        "UPSTOX_ACCESS_TOKEN accepted: logged in as %s until %s",
        session.user_id,
        format_ist(session.expires_at),
    )
    return "stored"
