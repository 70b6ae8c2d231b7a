"""A replica's drain before it stops (SIGTERM): when each client is told to reconnect.

Closing every client at the same instant makes them all reconnect to the other replicas at the
same instant (a stampede of handshakes, subscribes and snapshot reads). The drain spreads the
closes over `GATEWAY_DRAIN_SECONDS` instead: `close_offsets` (pure) cuts the window into one
slot per client and puts each close at a uniformly random moment of its slot, and the clients
are shuffled over the slots, so the closes are as even as evenly spaced ones while no two
replicas' (or two restarts') clients line up. Each close is 1012 "service restart"; the client
reconnects (elsewhere: this replica is not ready and refuses handshakes meanwhile) and takes a
snapshot.

`Drain` owns the drain's state: `active` (read by `/readyz` and the WebSocket handshake) and
`drained` (clients told to reconnect, a metric), and `run()`, which the server awaits on the
first SIGTERM before its usual shutdown. A client that leaves by itself during the drain is
simply gone; one that slipped in during the drain (its handshake was already being verified)
is closed at the end of the window. `run()` returns once every client is gone, and at the
latest a close timeout after the window: by then each connection's own timer has aborted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable

from services.gateway.fanout import Subscriber
from services.gateway.protocol import CLOSE_SERVICE_RESTART

logger = logging.getLogger(__name__)

RESTART_REASON: Final = "service restart"


def close_offsets(count: int, window: float, rng: random.Random) -> list[float]:
    """`count` moments in [0, window), ascending: one uniformly random moment per equal slot."""
    if count <= 0:
        return []
    slot = window / count
    return [(index + rng.random()) * slot for index in range(count)]


@runtime_checkable
class Closable(Protocol):
    """A client's sink that can be closed (the WebSocket connection)."""

    def close(self, code: int, reason: str) -> None: ...


class Drain:
    """Tells one replica's clients to reconnect, spread over the window, once."""

    def __init__(
        self,
        clients: Mapping[Subscriber, None],
        window: float,
        close_timeout: float,
        rng: random.Random | None = None,
    ) -> None:
        self._clients = clients  # the hub's registry: a client that left is no longer in it
        self.window = window
        self.close_timeout = close_timeout
        self._rng = rng or random.Random()
        self.active = False
        self.drained = 0
        self._empty = asyncio.Event()  # set when the last client has gone

    async def run(self) -> None:
        """Drain (once): schedule every client's close, wait for the window, close any client
        admitted meanwhile, then wait until all are gone or the close timeout has passed."""
        if self.active:
            return
        self.active = True
        loop = asyncio.get_running_loop()
        clients = list(self._clients)
        self._rng.shuffle(clients)
        logger.info("draining: %d clients told to reconnect over %gs", len(clients), self.window)
        offsets = close_offsets(len(clients), self.window, self._rng)
        timers = [
            loop.call_later(at, self._close, sub) for sub, at in zip(clients, offsets, strict=True)
        ]
        try:
            await self._until_empty(self.window)
            for sub in list(self._clients):
                self._close(sub)
            await self._until_empty(self.close_timeout)
        finally:
            for timer in timers:
                timer.cancel()
        logger.info(
            "drained: %d clients told to reconnect, %d still connected",
            self.drained,
            len(self._clients),
        )

    def left(self) -> None:
        """A client left (the hub unregistered it): the drain may be over."""
        if not self._clients:
            self._empty.set()

    async def _until_empty(self, seconds: float) -> None:
        if not self._clients:
            return
        self._empty.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), seconds)

    def _close(self, sub: Subscriber) -> None:
        if sub.closed or sub not in self._clients:
            return  # it left by itself
        sink = sub.sink
        if isinstance(sink, Closable):
            self.drained += 1
            sink.close(CLOSE_SERVICE_RESTART, RESTART_REASON)


__all__ = ["Closable", "Drain", "close_offsets"]
