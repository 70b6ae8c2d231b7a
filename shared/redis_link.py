"""The Redis-resilience vocabulary every service uses: notice an outage, come back alone, and
never lose a cancellation inside redis-py.

`RedisHealth` owns one question, "is Redis reachable?", for the users of one connection: they
report failures, wait for it to be up, and register hooks run when it goes down and when it is
back. Whoever re-establishes the connection reports the recovery: `RedisLink` finds it by
probing with PING (the ingestor); the gateway's broker reports it once its pub/sub connection
is back and resynced. Neither owns data or Redis names, and neither retries a caller's command
(the caller decides what to do again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from shared.redis_client import describe_redis_error
from shared.upstox.backoff import Backoff

__all__ = ["REDIS_ERRORS", "RedisHealth", "RedisLink", "guarded"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
"""What a failed Redis call raises: redis-py's own errors, or the socket's. redis-py's cluster
client raises some that are not RedisErrors (SlotNotCoveredError while a failed master's slots
wait for its replica's promotion): without them a loop's Redis work would end its task."""


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


class RedisHealth:
    """Whether Redis is reachable. Any user that sees a Redis error calls `failed()`; whoever
    re-establishes the connection calls `recovered()`. `on_fail` hooks run when Redis goes
    down, `on_recover` hooks when it is back (once per transition). `errors` counts the
    failures reported, for the metrics."""

    def __init__(self, *, up: bool = True) -> None:
        self._up = asyncio.Event()
        self._down = asyncio.Event()  # wakes whoever probes for the recovery
        (self._up if up else self._down).set()
        # Whether this outage was logged: a service that starts with Redis down (or refusing
        # its password) says why once, not at every retry, and not never.
        self._told = False
        self.on_fail: list[Callable[[], None]] = []
        self.on_recover: list[Callable[[], None]] = []
        self.errors = 0

    @property
    def ok(self) -> bool:
        return self._up.is_set()

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        if not self._told:
            logger.warning("%s; retrying with backoff", describe_redis_error(error))
            self._told = True
        if self._up.is_set():
            self._up.clear()
            self._down.set()
            for hook in self.on_fail:
                hook()

    def recovered(self) -> None:
        if self._up.is_set():
            return
        self._down.clear()
        self._up.set()
        self._told = False
        for hook in self.on_recover:
            hook()

    def stopped(self) -> None:
        """Down because nobody watches any more (a service stopping): no failure is counted or
        logged and no hook runs; a later recovery starts from here."""
        self._up.clear()
        self._down.set()
        self._told = True

    async def wait_up(self) -> None:
        await self._up.wait()


class RedisLink(RedisHealth):
    """`RedisHealth` that finds the recovery itself: once a failure is reported, `run()` probes
    with backoff and, when Redis answers, reports it recovered."""

    def __init__(self, client: aioredis.Redis, backoff: Backoff) -> None:
        super().__init__()
        self.client = client
        self._backoff = backoff

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
            logger.info("Redis is reachable again")
            self.recovered()
