"""The broker: this replica's Redis side, the way centrifuge separates a broker from its hub.

Owns, for the replica's whole life: the command client (a bounded pool), the one pub/sub
connection (`pubsub.PubSubLink`) and the set of channel names it must carry, the PING barriers
that confirm subscriptions, and the reconnect loop (jittered backoff, reset once a connection
has been resynced). `health` answers "is Redis up, as clients are told?" (a
`shared.redis_link.RedisHealth`); `connected` says whether a pub/sub connection is being served
at all, resync included. Everything else reaches the hub through `BrokerHandler`.

It must not know about clients, frames, channels' subscribers or demand: it deals in channel
names and bytes. Ticks go from the pub/sub protocol straight to the handler's `on_message`.

Ordering: SUBSCRIBE and UNSUBSCRIBE are written at once, in the order they are issued, and are
confirmed together by the next PING barrier (`confirm()`): Redis answers a PING only after
everything written before it.

Liveness: TCP can keep a connection open that delivers nothing (a half-dead link, a proxy that
failed over to another server). Every probe period the broker sends a PING barrier on the
pub/sub connection; no answer within one more period and the connection is lost, with the
same recovery as a closed one (rebuild with backoff, resubscribe, resync, snapshots resent).
A server answers a PING with `pong` and the token only on a connection it holds subscriptions
for, so the probe also catches a connection moved by a proxy to a server that does not know
them (that server's plain reply never confirms a barrier). It costs one PING per period and
nothing per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis.asyncio as aioredis

from services.gateway.errors import PubSubClosed, RedisLost
from services.gateway.pubsub import PubSubLink
from shared.redis_client import connect_redis
from shared.redis_link import REDIS_ERRORS, RedisHealth, guarded
from shared.tasks import cancel_and_wait
from shared.upstox.backoff import Backoff

__all__ = ["LINK_ERRORS", "Broker", "BrokerHandler"]

logger = logging.getLogger(__name__)

BARRIER_TIMEOUT: Final = 10.0
POOL_SIZE: Final = 16  # command connections (snapshots, demand, status); pub/sub has its own
LINK_ERRORS: Final = (*REDIS_ERRORS, RedisLost)
"""How a connection's life ends (PubSubClosed and timeouts are OSErrors)."""


class BrokerHandler(Protocol):
    """What the broker reports to the hub."""

    def on_message(self, name: bytes, data: bytes) -> None:
        """A pub/sub message: every tick goes through here, so it must not block."""

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        """These channels' subscriptions are in effect on the current connection."""

    async def on_up(self) -> None:
        """A new connection carries (and has confirmed) every channel: resync, then call
        `health.recovered()` when clients may be told. Raising drops the connection."""

    def on_down(self) -> None:
        """The connection ended: no subscription is in effect until the next `on_up`."""


@dataclass(slots=True)
class _Barrier:
    future: asyncio.Future[bool]
    names: set[bytes]


class Broker:
    """`open()` before use, `run()` as a task, `close()` at the end."""

    def __init__(
        self,
        url: str,
        handler: BrokerHandler,
        channels: Iterable[bytes] = (),
        *,
        probe_seconds: float = 5.0,
    ) -> None:
        self._url = url
        self._handler = handler
        self._probe_seconds = probe_seconds
        self.probes_failed = 0  # liveness probes not answered in time (each lost a connection)
        self.health = RedisHealth(up=False)
        self._backoff = Backoff(0.1, 5.0)
        self.health.on_recover.append(self._backoff.reset)
        self._redis: aioredis.Redis | None = None
        self._link: PubSubLink | None = None  # the pub/sub connection being served
        self._names: dict[bytes, None] = dict.fromkeys(channels)  # to carry, (re)connected or not
        self._unconfirmed: set[bytes] = set()  # subscribed since the last barrier
        self._last_barrier: asyncio.Future[bool] | None = None
        self._barriers: dict[bytes, _Barrier] = {}
        self._broken = asyncio.Event()
        self._broken_cause: BaseException | None = None

    # ---- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        self._redis = connect_redis(self._url, max_connections=POOL_SIZE)

    async def close(self) -> None:
        if self._redis is not None:
            await guarded(self._redis.aclose())
            self._redis = None
        self.health.stopped()

    @property
    def redis(self) -> aioredis.Redis:
        """The command client (the pub/sub connection is separate)."""
        if self._redis is None:
            raise RuntimeError("the broker is not open")
        return self._redis

    @property
    def connected(self) -> bool:
        """A pub/sub connection is being served (its resync included)."""
        return self._link is not None

    def failed(self, error: BaseException) -> None:
        """Any user of Redis that saw it fail: drop the pub/sub connection and reconnect."""
        if not self._broken.is_set():
            self._broken_cause = error
        self._broken.set()

    async def attempt(self, work: Callable[[], Awaitable[None]]) -> None:
        """One round of a background loop's Redis work, done only while connected (the resync
        after an outage redoes it all). A Redis failure is reported, not raised."""
        if self._link is None:
            return
        try:
            await guarded(work())
        except REDIS_ERRORS as error:
            self.failed(error)

    async def run(self) -> None:
        """Serve one pub/sub connection after another, with backoff in between."""
        while True:
            try:
                await self._serve()
            except LINK_ERRORS as error:
                if not self.health.ok:
                    logger.debug("Redis still unreachable: %s", error)
                self._down(error)
                await self._drop_idle_commands()
            await asyncio.sleep(self._backoff.next_delay())

    async def _serve(self) -> None:
        """One pub/sub connection's life: connect, resubscribe, resync, serve until it fails.
        Always raises."""
        self._broken.clear()
        # The handler's bound method goes straight to the protocol: no hop per tick.
        link = await PubSubLink.open(
            self._url, on_message=self._handler.on_message, on_pong=self._on_pong
        )
        broken = asyncio.create_task(self._broken.wait(), name="gateway-link-watch")
        resync: asyncio.Task[None] | None = None
        probe: asyncio.Task[None] | None = None
        try:
            names = list(self._names)
            link.subscribe(names)
            self._link = link
            self._unconfirmed = set(names)
            resync = asyncio.create_task(self._resync(), name="gateway-resync")
            # From the start: a link that goes silent during the resync is caught as well.
            probe = asyncio.create_task(self._probe(), name="gateway-link-probe")
            waiting: set[asyncio.Future[Any]] = {link.closed, broken, resync, probe}
            while True:
                done, waiting = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
                if done == {resync} and resync.exception() is None:
                    continue  # resynced: serve until the link fails
                break
            for future in (link.closed, probe, resync):
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            raise RedisLost(f"the Redis link was dropped: {self._broken_cause!r}")
        finally:
            self._link = None
            link.close()
            await cancel_and_wait(task for task in (broken, resync, probe) if task is not None)

    async def _resync(self) -> None:
        if not await self.confirm():
            raise RedisLost("subscriptions were not confirmed")
        await self._handler.on_up()

    async def _probe(self) -> None:
        """The connection's liveness: a PING barrier every probe period, answered within one
        more period (the next probe would be due by then), or the connection is lost."""
        period = self._probe_seconds
        while True:
            await asyncio.sleep(period)
            try:
                async with asyncio.timeout(period):
                    await self._barrier()
            except TimeoutError:
                self.probes_failed += 1
                raise RedisLost(
                    f"the pub/sub connection did not answer a PING within {period:g} s"
                ) from None

    async def _drop_idle_commands(self) -> None:
        """The idle command connections go with the pub/sub one: they lead to the same server,
        and one as dead would cost its next command a socket timeout before its retry."""
        if self._redis is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await guarded(self._redis.connection_pool.disconnect(inuse_connections=False))

    def _down(self, cause: BaseException) -> None:
        self._unconfirmed.clear()
        futures = [barrier.future for barrier in self._barriers.values()]
        self._barriers.clear()
        self._last_barrier = None
        for future in futures:
            if not future.done():
                future.set_result(False)
        self._handler.on_down()
        self.health.failed(cause)  # on the way down: warns, and the hub tells its clients

    # ---- channels --------------------------------------------------------------------------

    def subscribe(self, names: Sequence[bytes]) -> None:
        """Carry these channels from now on (written at once when connected)."""
        self._names.update(dict.fromkeys(names))
        if self._link is None:
            return  # the next connection subscribes to everything
        try:
            self._link.subscribe(names)
        except PubSubClosed as error:
            self.failed(error)
        else:
            self._unconfirmed.update(names)

    def unsubscribe(self, names: Sequence[bytes]) -> None:
        for name in names:
            self._names.pop(name, None)
        self._unconfirmed.difference_update(names)
        if self._link is None:
            return
        try:
            self._link.unsubscribe(names)
        except PubSubClosed as error:
            self.failed(error)

    async def confirm(self) -> bool:
        """Wait until every SUBSCRIBE sent so far is in effect: Redis answers a PING sent behind
        them only after it has carried them out. False if there is no connection or it failed;
        a barrier not answered in time fails the connection."""
        try:
            async with asyncio.timeout(BARRIER_TIMEOUT):
                return await self._barrier()
        except TimeoutError:
            self.failed(RedisLost("a subscription was not confirmed in time"))
            return False

    async def _barrier(self) -> bool:
        """Send a PING barrier (or join the one in flight when nothing was written since) and
        wait for its answer: True once answered, False if there is no connection or it ended.
        The caller bounds the wait; the barrier itself outlives it, for its other waiters."""
        if self._link is None:
            return False
        if self._unconfirmed or self._last_barrier is None or self._last_barrier.done():
            token = secrets.token_hex(8).encode()
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._barriers[token] = _Barrier(future, self._unconfirmed)
            self._unconfirmed = set()
            self._last_barrier = future
            try:
                self._link.ping(token)
            except PubSubClosed as error:
                self.failed(error)
                return False
        return await asyncio.shield(self._last_barrier)

    def _on_pong(self, token: bytes) -> None:
        barrier = self._barriers.pop(token, None)
        if barrier is None:
            return
        self._handler.on_confirmed(barrier.names)
        if not barrier.future.done():
            barrier.future.set_result(True)
