"""The restore loop: every few seconds, bring Redis in line with auth's durable copy.

Each round (`Restorer.round`) reads Redis's active session and the durable copy, asks
`recovery.decide` what to do, and does it under the keeper's lock: apply logouts Redis has not
seen, put back a session Redis lost (event `restored`), mark the copy invalid or drop it when
expired. Storing `UPSTOX_ACCESS_TOKEN` again asks Upstox first, so it runs after the round,
outside the lock. The first round runs at start; while Redis is unreachable each round fails
and the next one, once Redis answers, catches up (the loop says so once each way).

It owns the loop and nothing else: no HTTP, no decisions of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from services.auth import bootstrap, recovery
from services.auth.context import AuthContext

__all__ = ["Restorer"]

logger = logging.getLogger(__name__)


class Restorer:
    def __init__(self, context: AuthContext) -> None:
        self._context = context
        self._unheard: set[str] = set()  # users whose logout nobody has heard yet (logged once)

    async def run(self) -> None:
        interval = self._context.settings.auth_restore_interval_seconds
        failing = False
        while True:
            try:
                await self.round()
            except (RedisError, OSError) as error:
                if not failing:
                    logger.warning(
                        "cannot compare the stored session with Redis (%s); retrying every %.1fs",
                        type(error).__name__,
                        interval,
                    )
                failing = True
            else:
                if failing:
                    logger.info("Redis answers again: the stored session is checked")
                failing = False
            await asyncio.sleep(interval)

    async def round(self) -> list[recovery.Action]:
        """One comparison and what it led to (Redis errors propagate)."""
        context = self._context
        async with context.keeper.lock:
            active = await context.store.active()
            keeper = context.keeper
            seen = recovery.Seen(active, keeper.session(), keeper.logouts(), time.time())
            actions = recovery.decide(seen, env_token=self._env_token_allowed())
            for action in actions:
                await self._apply(action, seen.now)
        env = context.env_token
        store_env = any(isinstance(action, recovery.StoreEnvToken) for action in actions)
        if store_env and env is not None and await bootstrap.store_again(context, env):
            context.metrics.recovery["env_token_stored"] += 1
        return actions

    def _env_token_allowed(self) -> bool:
        context = self._context
        env, check = context.env_token, context.bootstrap
        return env is not None and not env.ended and (check is None or check.done())

    async def _apply(self, action: recovery.Action, now: float) -> None:
        context = self._context
        if isinstance(action, recovery.ApplyLogout):
            listeners = await context.store.end(action.user_id)
            if recovery.logout_settled(action.at, listeners, now):
                context.keeper.logout_applied(action.user_id, action.at)
                context.metrics.recovery["logout_applied"] += 1
                self._unheard.discard(action.user_id)
                logger.info("applied the logout of %s made while Redis was down", action.user_id)
            elif action.user_id not in self._unheard:
                self._unheard.add(action.user_id)
                logger.info(
                    "announced the logout of %s; announcing again until an ingestor hears it",
                    action.user_id,
                )
        elif isinstance(action, recovery.Restore):
            await context.store.restore(action.session)
            context.metrics.recovery["restored"] += 1
            logger.warning(
                "Redis had lost the session of %s: restored it from AUTH_STATE_DIR",
                action.session.user_id,
            )
        elif isinstance(action, recovery.MarkCopyInvalid):
            context.keeper.mark_invalid(action.session)
        elif isinstance(action, recovery.DropCopy):
            context.keeper.drop_expired()
