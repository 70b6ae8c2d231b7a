"""The ingestor's state and its report: `INGESTOR_STATUS` (kept fresh) and `INGESTOR_EVENTS`.

`StatusReporter` owns the state value (`starting` ... `stopped`) and the writing of the status
record: rewritten every third of the lease TTL (it expires after three), at once when something
in it changes, and announced on `INGESTOR_EVENTS` only when its content (not its timestamp)
changed. What the record says besides the state (epoch, subscriptions, refusals) it reads from
its source when it writes.

It must NOT decide the state (the lease, the upstream session and the lifecycle set it) nor
touch the lease, the demand or the upstream connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Protocol

import orjson

from services.ingestor.subscriptions import Plan
from shared import redis_contract as rc
from shared.instruments import Mode, count_modes
from shared.redis_client import queue_publish
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded

__all__ = ["StatusReporter", "StatusSource"]

logger = logging.getLogger(__name__)


class StatusSource(Protocol):
    """What a status record reports besides the state."""

    @property
    def epoch(self) -> str: ...

    @property
    def subscribed(self) -> Mapping[str, Mode]: ...

    @property
    def plan(self) -> Plan: ...


class StatusReporter:
    def __init__(
        self,
        link: RedisLink,
        source: StatusSource,
        *,
        instance: str,
        ttl_ms: int,
    ) -> None:
        self.state: rc.IngestorState = "starting"
        self._link = link
        self._source = source
        self._instance = instance
        self._ttl_ms = ttl_ms
        self._dirty = asyncio.Event()

    def set_state(self, state: rc.IngestorState) -> None:
        if state != self.state:
            logger.debug("state %s -> %s", self.state, state)
            self.state = state
            self._dirty.set()

    def changed(self) -> None:
        """Something the record reports changed: write it now rather than at the next round."""
        self._dirty.set()

    def current(self, state: rc.IngestorState | None = None) -> rc.IngestorStatus:
        source = self._source
        return rc.IngestorStatus(
            instance=self._instance,
            state=state or self.state,
            epoch=source.epoch,
            subscribed=count_modes(source.subscribed.values()),
            refused=len(source.plan.refused),
            updated_at=int(time.time() * 1000),
        )

    async def run(self) -> None:
        last: bytes | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ttl_ms / 3000):
                    await self._dirty.wait()
            self._dirty.clear()
            await self._link.wait_up()
            status = self.current()
            summary = orjson.dumps(status.model_dump(exclude={"updated_at"}))
            try:
                await guarded(self._write(status, announce=summary != last))
            except REDIS_ERRORS as error:
                self._link.failed(error)
                continue
            last = summary

    async def write_stopped(self) -> None:
        """Say, and announce, that this instance stopped (a clean stop; raises Redis errors)."""
        await guarded(self._write(self.current("stopped"), announce=True))

    async def _write(self, status: rc.IngestorStatus, *, announce: bool) -> None:
        payload = status.model_dump_json()
        async with self._link.client.pipeline(transaction=False) as pipe:
            pipe.set(rc.INGESTOR_STATUS, payload, px=self._ttl_ms * 3)
            if announce:
                queue_publish(pipe, rc.INGESTOR_EVENTS, payload)
            await pipe.execute()
