"""A token from the environment (`UPSTOX_ACCESS_TOKEN`) is checked with Upstox and stored.

At start it runs in the background so auth serves at once; while Upstox or Redis is unreachable
it retries with backoff, and a token Upstox refuses is dropped with one clear log line (without
the token). Later, when Redis has lost every session and there is no durable copy to restore,
the restore loop stores it again (`store_again`), unless it was refused, replaced by a login,
or its user logged out since (`EnvToken.ended`): the environment never undoes a logout, nor
brings back a session a login replaced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from services.auth.context import AuthContext
from services.auth.metrics import EnvTokenOutcome
from shared.ist import format_ist
from shared.sessions import SessionDecryptError
from shared.upstox.backoff import Backoff
from shared.upstox.errors import UpstoxAuthError, UpstoxError

__all__ = ["EnvToken", "bootstrap_env_token", "store_again"]

logger = logging.getLogger(__name__)


@dataclass
class EnvToken:
    """`UPSTOX_ACCESS_TOKEN` and what became of it (in memory only; never logged)."""

    token: str = field(repr=False)
    user_id: str | None = None  # whose it is, once Upstox said
    ended: bool = False  # refused, replaced or logged out: not stored again until a restart

    def logged_out(self, user_id: str) -> None:
        if self.user_id is None or self.user_id == user_id:
            self.ended = True

    def replaced(self) -> None:
        """A login stored another session: this token is no longer the one to keep."""
        self.ended = True


async def bootstrap_env_token(
    context: AuthContext, env: EnvToken, backoff: Backoff
) -> EnvTokenOutcome:
    """'stored', 'unchanged' (already the active valid session) or 'refused'."""
    while True:
        try:
            outcome: EnvTokenOutcome = await _check_and_store(context, env, replace=True)
        except UpstoxAuthError as error:
            outcome = _refused(env, error)
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


async def store_again(context: AuthContext, env: EnvToken) -> bool:
    """One attempt to store the token again while nothing is active; whether it was stored.
    Redis errors propagate (the restore loop waits for Redis); Upstox failing is logged."""
    try:
        outcome = await _check_and_store(context, env, replace=False)
    except UpstoxAuthError as error:
        context.metrics.env_token[_refused(env, error)] += 1
        return False
    except UpstoxError as error:
        logger.warning("cannot check UPSTOX_ACCESS_TOKEN again yet: %s", error.describe())
        return False
    return outcome == "stored"


def _refused(env: EnvToken, error: UpstoxAuthError) -> EnvTokenOutcome:
    env.ended = True
    logger.warning(
        "UPSTOX_ACCESS_TOKEN was refused by Upstox (%s); ignoring it: log in through "
        "/authorize or set a fresh token",
        error.describe(),
    )
    return "refused"


async def _check_and_store(
    context: AuthContext, env: EnvToken, *, replace: bool
) -> EnvTokenOutcome:
    """Store the token as the active session. `replace`: even over another active session
    (at start); otherwise only if nothing is active when Upstox has answered."""
    try:
        current = await context.store.active_token()
    except SessionDecryptError:
        current = None  # an unreadable session will be replaced by this one
    if current is not None and current[1] == env.token:
        env.user_id = current[0]
        logger.info("UPSTOX_ACCESS_TOKEN is already the active session (%s)", current[0])
        return "unchanged"
    profile = await context.upstox.profile(env.token)
    env.user_id = profile.user_id
    async with context.keeper.lock:
        if not replace and await context.store.active() is not None:
            return "unchanged"  # a login or a restore got there first
        session = await context.store.save(profile, env.token)
        context.keeper.kept(session)
    logger.info(
        "UPSTOX_ACCESS_TOKEN accepted: logged in as %s until %s",
        session.user_id,
        format_ist(session.expires_at),
    )
    return "stored"
