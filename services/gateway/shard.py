"""One pub/sub connection of the broker and the channels it must carry: the one Redis's, or one
Redis Cluster master's (the broker holds one per master and routes channels between them).

Owns, for one server: the `PubSubLink` being served, the channel names it carries, the PING
barriers that confirm its subscriptions, its liveness probe and its reconnect loop (jittered
backoff, reset once a connection has been resynced). On a cluster, tick channels are written as
SSUBSCRIBE/SUNSUBSCRIBE one slot per command (a node refuses several slots in one), control
channels as classic SUBSCRIBE; what the node refuses or pushes away goes to `on_moved`.

Ordering: SUBSCRIBE and UNSUBSCRIBE are written at once, in the order they are issued, and are
confirmed together by the next PING barrier (`confirm()`): Redis answers a PING only after
everything written before it.

Liveness: TCP can keep a connection open that delivers nothing (a half-dead link, a proxy that
failed over to another server). Every probe period a PING barrier goes out on the connection;
no answer within one more period and the connection is lost, with the same recovery as a
closed one (rebuild with backoff, resubscribe, resync, snapshots resent). A server answers a
PING with `pong` and the token only on a connection it holds subscriptions for, so the probe
also catches a connection moved by a proxy to a server that does not know them. It costs one
PING per period and nothing per message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from services.gateway.cluster import Address, group_by_slot, is_sharded
from services.gateway.errors import PubSubClosed, RedisLost
from services.gateway.pubsub import MessageHandler, PubSubLink
from shared.redis_link import REDIS_ERRORS
from shared.tasks import cancel_and_wait
from shared.upstox.backoff import Backoff

__all__ = ["BARRIER_TIMEOUT", "LINK_ERRORS", "Shard", "ShardEvents"]

logger = logging.getLogger(__name__)

BARRIER_TIMEOUT: Final = 10.0
LINK_ERRORS: Final = (*REDIS_ERRORS, RedisLost)
"""How a connection's life ends (PubSubClosed and timeouts are OSErrors)."""


class ShardEvents(Protocol):
    """What a shard reports to the broker."""

    def on_confirmed(self, names: Iterable[bytes]) -> None: ...

    async def on_shard_up(self, shard: Shard) -> None:
        """Connected, every channel confirmed: resync. Raising drops the connection."""

    async def on_shard_down(self, shard: Shard, cause: BaseException) -> None: ...

    def on_moved(self, shard: Shard, names: tuple[bytes, ...], reason: str) -> None:
        """A cluster node refused these channels or dropped them (their slot moved)."""


@dataclass(slots=True)
class _Barrier:
    future: asyncio.Future[bool]
    names: set[bytes]


class Shard:
    """`run()` as a task; `failed()` drops the connection (it is rebuilt)."""

    def __init__(
        self,
        url: str,
        events: ShardEvents,
        address: Address,
        on_message: MessageHandler,
        *,
        cluster: bool = False,
        probe_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.address = address
        self.label = f"{address[0]}:{address[1]}"  # for logs and metrics (never the URL)
        self._events = events
        self._on_message = on_message  # the hub's: ticks skip the broker
        self._cluster = cluster
        self._probe_seconds = probe_seconds
        self.names: dict[bytes, None] = {}  # to carry, (re)connected or not
        self.probes_failed = 0
        self.connects = 0  # connections served and resynced
        self.backoff = Backoff(0.1, 5.0)
        self._link: PubSubLink | None = None
        self._unconfirmed: set[bytes] = set()
        self._last_barrier: asyncio.Future[bool] | None = None
        self._barriers: dict[bytes, _Barrier] = {}
        self._broken = asyncio.Event()
        self._broken_cause: BaseException | None = None
        self.up = False  # served and resynced

    @property
    def connected(self) -> bool:
        """A connection is being served (its resync included)."""
        return self._link is not None

    def failed(self, error: BaseException) -> None:
        if not self._broken.is_set():
            self._broken_cause = error
        self._broken.set()

    async def run(self) -> None:
        """Serve one connection after another, with backoff in between."""
        while True:
            cause: BaseException
            try:
                await self._serve()
            except LINK_ERRORS as error:
                cause = error
            except Exception as error:  # a bug must cost one connection, never the shard
                logger.exception("the pub/sub connection to %s failed unexpectedly", self.label)
                cause = error
            try:
                await self._down(cause)
            except Exception:  # nor may reporting the loss end the reconnecting
                logger.exception("reporting the loss of %s failed", self.label)
            await asyncio.sleep(self.backoff.next_delay())

    async def _serve(self) -> None:
        """One connection's life: connect, resubscribe, resync, serve until it fails. Always
        raises."""
        self._broken.clear()
        # The handler's bound method goes straight to the protocol: no hop per tick.
        link = await PubSubLink.open(
            self.url,
            on_message=self._on_message,
            on_pong=self._on_pong,
            on_moved=self._on_moved if self._cluster else None,
        )
        broken = asyncio.create_task(self._broken.wait(), name="gateway-link-watch")
        resync: asyncio.Task[None] | None = None
        probe: asyncio.Task[None] | None = None
        try:
            self._link = link
            names = list(self.names)
            self._write(names, subscribe=True)
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
        self.connects += 1
        self.up = True
        await self._events.on_shard_up(self)

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

    async def _down(self, cause: BaseException) -> None:
        self.up = False
        self._unconfirmed.clear()
        futures = [barrier.future for barrier in self._barriers.values()]
        self._barriers.clear()
        self._last_barrier = None
        for future in futures:
            if not future.done():
                future.set_result(False)
        await self._events.on_shard_down(self, cause)

    # ---- channels --------------------------------------------------------------------------

    def _write(self, names: Sequence[bytes], *, subscribe: bool) -> None:
        """SUBSCRIBE or UNSUBSCRIBE `names` on the connection (raises PubSubClosed)."""
        assert self._link is not None
        if not self._cluster:
            (self._link.subscribe if subscribe else self._link.unsubscribe)(names)
            return
        classic = [name for name in names if not is_sharded(name)]
        (self._link.subscribe if subscribe else self._link.unsubscribe)(classic)
        for group in group_by_slot(name for name in names if is_sharded(name)).values():
            if subscribe:
                self._link.subscribe(group, sharded=True)
            else:
                self._link.unsubscribe(group, sharded=True)

    def subscribe(self, names: Sequence[bytes]) -> None:
        """Carry these channels from now on (written at once when connected)."""
        self.names.update(dict.fromkeys(names))
        if self._link is None:
            return  # the next connection subscribes to everything
        try:
            self._write(names, subscribe=True)
        except PubSubClosed as error:
            self.failed(error)
        else:
            self._unconfirmed.update(names)

    def unsubscribe(self, names: Sequence[bytes]) -> None:
        self.forget(names)
        if self._link is None:
            return
        try:
            self._write(names, subscribe=False)
        except PubSubClosed as error:
            self.failed(error)

    def forget(self, names: Iterable[bytes]) -> None:
        """Stop carrying these channels without a word to the server (it dropped them)."""
        names = list(names)
        for name in names:
            self.names.pop(name, None)
        self._unconfirmed.difference_update(names)
        for barrier in self._barriers.values():
            barrier.names.difference_update(names)

    def _on_moved(self, names: tuple[bytes, ...], reason: str) -> None:
        carried = tuple(name for name in names if name in self.names)
        if carried:
            self.forget(carried)
            self._events.on_moved(self, carried, reason)

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
        self._events.on_confirmed(barrier.names)
        if not barrier.future.done():
            barrier.future.set_result(True)
