"""What the ingestor says, as this replica knows it: its state and epoch, the market status, and
the keys it refuses to stream.

Owns reading them: from their event channels as they are announced, from Redis at every resync,
and the refused-keys hash again whenever an ingestor status arrives (announced, or read by the
demand heartbeat). An absent or unreadable status means "unknown".

It also words the `status` frame. It must not send frames nor know clients: it reports a changed
state, a new market status and newly refused keys through the callbacks the hub gives it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from pydantic import ValidationError

from services.gateway.broker import Broker
from services.gateway.commands import Refusals
from services.gateway.protocol import status_frame
from shared import redis_contract as rc
from shared.redis_link import guarded
from shared.resp import as_bytes, as_text

__all__ = ["UNKNOWN", "UpstreamStatus"]

logger = logging.getLogger(__name__)

UNKNOWN: Final = "unknown"


class UpstreamStatus:
    """`on_market_info()` and `on_ingestor_status()` for their events, `resync()` in the
    broker's resync, `run()` as a task (it re-reads the refused keys when woken)."""

    def __init__(
        self,
        broker: Broker,
        *,
        on_state: Callable[[], None],
        on_market_info: Callable[[bytes], None],
        on_refused: Callable[[Sequence[str]], None],
    ) -> None:
        self._broker = broker
        self._on_state = on_state
        self._on_market_info = on_market_info
        self._on_refused = on_refused
        self.ingestor_state = UNKNOWN
        self.ingestor_epoch = ""
        self.market_info: bytes | None = None
        self.refused: Refusals = {}
        self._wake = asyncio.Event()

    def on_market_info(self, data: bytes) -> None:
        self.market_info = data
        self._on_market_info(data)

    def on_ingestor_status(self, data: bytes | None) -> None:
        state, epoch = _ingestor_state(data)
        self._wake.set()
        if state != self.ingestor_state or epoch != self.ingestor_epoch:
            self.ingestor_state, self.ingestor_epoch = state, epoch
            self._on_state()

    def status_frame(self, redis_up: bool) -> bytes:
        """The `status` frame clients get: Redis's state (as the hub announces it) and the
        ingestor's, in words."""
        if not redis_up:
            message = "Redis is unreachable: live updates pause and resume when it is back"
        elif self.ingestor_state == "connected":
            message = "live"
        elif self.ingestor_state == UNKNOWN:
            message = "no ingestor is reporting: updates resume when one runs"
        elif self.ingestor_state == "stalled":
            message = "the upstream feed went silent: the ingestor is reconnecting to it"
        else:
            message = f"the ingestor is {self.ingestor_state.replace('_', ' ')}"
        return status_frame(redis_up, self.ingestor_state, message)

    async def resync(self) -> None:
        """Read all of it again after a (re)connection: changes while away were not announced
        here. Only a new market status is reported (the hub announces the rest)."""
        values = await guarded(self._broker.redis.mget([rc.MARKET_INFO, rc.INGESTOR_STATUS]))
        info, status = (None if value is None else as_bytes(value) for value in values)
        await self._read_refused(notify=False)
        self.ingestor_state, self.ingestor_epoch = _ingestor_state(status)
        if info is not None and info != self.market_info:
            self.on_market_info(info)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._broker.attempt(self._read_refused)

    async def _read_refused(self, *, notify: bool = True) -> None:
        raw = await guarded(self._broker.redis.hgetall(rc.INGESTOR_REFUSED))
        refused = {as_text(key): rc.decode_refusal(value) for key, value in raw.items()}
        before, self.refused = self.refused, refused
        news = [key for key, value in refused.items() if before.get(key) != value]
        if notify and news:
            self._on_refused(news)


def _ingestor_state(data: bytes | None) -> tuple[str, str]:
    """(state, epoch) from an `IngestorStatus` JSON; absent or unreadable: unknown."""
    if data is None:
        return UNKNOWN, ""
    try:
        status = rc.IngestorStatus.model_validate_json(data)
    except ValidationError:
        logger.warning("ignoring a malformed ingestor status")
        return UNKNOWN, ""
    return status.state, status.epoch
