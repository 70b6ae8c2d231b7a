"""The ingestor's Redis connection and its health: fail fast, notice outages, come back alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.ingestor.metrics import IngestorMetrics
from shared.redis_client import connect_redis
from shared.upstox.backoff import Backoff

__all__ = ["RedisLink", "connect_redis", "guarded"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    """Tracks whether Redis is reachable. Any user that sees a `RedisError` calls `failed()`;
    `run()` then probes with backoff and, once Redis answers, calls every `on_recover` hook."""

    def __init__(
        self,
        client: aioredis.Redis,
        metrics: IngestorMetrics,
        backoff: Backoff,
    ) -> None:
        self.client = client
        self._metrics = metrics
        self._backoff = backoff
        self._up = asyncio.Event()
        self._up.set()
        self._down = asyncio.Event()
        self.on_recover: list[Callable[[], None]] = []
        self.outages = 0

    @property
    def ok(self) -> bool:
        return self._up.is_set()

    def failed(self, error: BaseException) -> None:
        self._metrics.redis_errors.inc()
        if self._up.is_set():
            self.outages += 1
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
                except (RedisError, OSError) as error:
                    self._metrics.redis_errors.inc()
                    logger.debug("Redis still unreachable: %s", error)
                    continue
                break
            self._backoff.reset()
            self._down.clear()
            self._up.set()
            logger.info("Redis is reachable again")
            for hook in self.on_recover:
                hook()
