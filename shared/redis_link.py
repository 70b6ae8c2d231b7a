"""The Redis-resilience vocabulary every service uses: notice an outage, come back alone, and
never lose a cancellation inside redis-py.

`RedisLink` owns one question, "is Redis reachable?", for the users of one client: they report
failures, wait for it to be up, and register hooks run on recovery. It owns no data and no
Redis names, and it never retries a caller's command (the caller decides what to do again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.upstox.backoff import Backoff

__all__ = ["REDIS_ERRORS", "RedisLink", "guarded"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_ERRORS = (RedisError, OSError)
"""What a failed Redis call raises: redis-py's own errors, or the socket's."""


async def guarded(call: Awaitable[T]) -> T:
    """Await a redis-py call without losing a cancellation of the calling task.

    redis-py's asyncio client (8.x) can swallow a CancelledError that lands while a command is
    in flight: the call returns normally, or raises ConnectionError instead. A loop cancelled at
    that moment would keep running and its TaskGroup would never finish. The task still counts
    the request (`cancelling()`), so it is raised again here.
    """
    try:
        return await call
    finally:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


class RedisLink:
    """Tracks whether Redis is reachable. Any user that sees a Redis error calls `failed()`;
    `run()` then probes with backoff and, once Redis answers, calls every `on_recover` hook.
    `errors` counts failed operations (reported and probed) for the metrics."""

    def __init__(self, client: aioredis.Redis, backoff: Backoff) -> None:
        self.client = client
        self._backoff = backoff
        self._up = asyncio.Event()
        self._up.set()
        self._down = asyncio.Event()
        self.on_recover: list[Callable[[], None]] = []
        self.errors = 0

    @property
    def ok(self) -> bool:
        return self._up.is_set()

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        if self._up.is_set():
            logger.warning("Redis is unreachable (%s); retrying with backoff", error)
            self._up.clear()
            self._down.set()

    async def wait_up(self) -> None:
        await self._up.wait()

    async def run(self) -> None:
        while True:
            await self._down.wait()
            while True:
                await asyncio.sleep(self._backoff.next_delay())
                try:
                    await guarded(self.client.ping())
                except REDIS_ERRORS as error:
                    self.errors += 1
                    logger.debug("Redis still unreachable: %s", error)
                    continue
                break
            self._backoff.reset()
            self._down.clear()
            self._up.set()
            logger.info("Redis is reachable again")
            for hook in self.on_recover:
                hook()
