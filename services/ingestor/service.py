"""The ingestor: one instance's lifecycle, the active-instance lease, and the roles it runs.

```
lease loop (always) ── holds the lease? ──► active session (TaskGroup)
                                            ├─ events: DEMAND_EVENTS + TOKEN_EVENTS (pub/sub)
                                            ├─ demand (DemandSync): hashes -> plan -> upstream
                                            ├─ upstream (UpstreamSession): token -> authorize
                                            │    -> connect -> read -> processor -> publisher
                                            ├─ publisher (Publisher): batches of ticks -> Redis
                                            ├─ frame log (FrameLog): frames -> record stream
                                            └─ status (StatusReporter): INGESTOR_STATUS
Redis link (always): probes with backoff after a failure, then republishes and re-reads demand
```

`Ingestor` owns start / stop / abort, the lease (take, renew, release, hand over, and stepping
down once it cannot prove it still holds it: `lease.py` says why that is safe), activation
and deactivation (starting and cancelling the active session, forgetting everything a standby
must not keep), the routing of Redis events to the roles, and the surface the app and the
tests read (readiness, state, epoch, subscriptions, plan, metrics).

It must NOT talk to the feed, plan demand or write ticks and status itself: those belong to
`upstream`, `demand`, `publisher` and `status`; deciding (planning, rendering, sequencing)
lives in the pure modules `subscriptions`, `processor` and `failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from services.ingestor.demand import DemandSync
from services.ingestor.framelog import FrameLog
from services.ingestor.lease import Lease, LeaseTiming, LeaseView
from services.ingestor.metrics import IngestorCollector
from services.ingestor.processor import TickProcessor
from services.ingestor.publisher import Publisher
from services.ingestor.settings import IngestorSettings
from services.ingestor.status import StatusReporter
from services.ingestor.subscriptions import Plan
from services.ingestor.upstream import UpstreamSession
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.metrics import registry_for
from shared.redis_client import connect_redis
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded
from shared.resp import as_text
from shared.tasks import cancel_and_wait

__all__ = ["Ingestor"]

logger = logging.getLogger(__name__)


class Ingestor:
    """One ingestor instance. `await start()`, later `await stop()` (or `abort()`, like a crash).

    Several instances may run against one Redis: exactly one (the lease holder) is active.
    """

    def __init__(self, settings: IngestorSettings) -> None:
        self.settings = settings
        self.instance = settings.ingestor_instance_id
        self.processor = TickProcessor()
        self.active = False
        self._ttl_ms = settings.ingestor_lease_ttl_ms
        client = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
        self.link = RedisLink(client, settings.backoff())
        self._lease = Lease(self.link.client, self.instance, self._ttl_ms)
        self._timing = LeaseTiming(self._ttl_ms / 1000, settings.ingestor_lease_renew_ms / 1000)
        self.publisher = Publisher(
            self.link,
            last_value_ttl=settings.ingestor_last_value_ttl_seconds,
            max_pending=settings.ingestor_max_pending_ticks,
            latest=self.processor.latest,
            latest_market_info=lambda: self.processor.market_info,
            instance=self.instance,
            lease_proven=self._lease.proven,
        )
        self._reporter = StatusReporter(
            self.link, self, instance=self.instance, ttl_ms=self._ttl_ms
        )
        self.framelog = (
            FrameLog(
                self.link,
                instance=self.instance,
                stream_bytes=int(settings.ingestor_record_stream_mb * (1 << 20)),
                buffer_bytes=int(settings.ingestor_record_buffer_mb * (1 << 20)),
            )
            if settings.ingestor_record
            else None
        )
        self.upstream = UpstreamSession(
            settings, self.link, self.processor, self.publisher, self._reporter, self.framelog
        )
        self.demand = DemandSync(settings, self.link, self.processor, self.upstream, self._reporter)
        self.metrics = registry_for(IngestorCollector(self))
        self.link.on_recover.append(self.publisher.republish_all)
        self.link.on_recover.append(self._redis_recovered)
        self._main_task: asyncio.Task[None] | None = None
        self._active_task: asyncio.Task[None] | None = None
        self._standby_grace_until = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._main_task is not None:
            raise RuntimeError("this ingestor was already started")
        logger.info("ingestor %s starting", self.instance)
        self._reporter.set_state("standby")
        self._main_task = asyncio.create_task(self._main(), name=f"ingestor {self.instance}")

    async def stop(self) -> None:
        """Stop cleanly: close upstream, say so in the status, and hand the lease over now."""
        await self._shutdown(release=True)

    async def abort(self) -> None:
        """Stop the way a crash would: the lease is left to lapse, nothing is written."""
        await self._shutdown(release=False)

    async def _shutdown(self, *, release: bool) -> None:
        was_active = self.active
        closers = self.upstream.closers
        tasks = [t for t in (self._main_task, self._active_task, *closers) if t is not None]
        await cancel_and_wait(tasks)
        self._set_inactive()
        if release and was_active:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                async with asyncio.timeout(2):
                    await self._reporter.write_stopped()
                    await guarded(self._lease.release())
        self._reporter.set_state("stopped")
        await self.upstream.aclose()
        await self.link.client.aclose()
        logger.info("ingestor %s stopped", self.instance)

    # ---- what others look at -----------------------------------------------------------------

    @property
    def state(self) -> rc.IngestorState:
        return self._reporter.state

    @property
    def upstream_connected(self) -> bool:
        return self.upstream.connected

    @property
    def redis_ok(self) -> bool:
        return self.link.ok

    @property
    def epoch(self) -> str:
        return self.processor.epoch

    @property
    def plan(self) -> Plan:
        return self.demand.plan

    @property
    def subscribed(self) -> Mapping[str, Mode]:
        """What is subscribed upstream right now (empty while disconnected)."""
        return self.upstream.subscribed

    def readiness(self) -> tuple[bool, str]:
        if not self.link.ok:
            return False, "redis unreachable"
        if not self.active:
            return self.state == "standby", self.state
        if self.upstream.connected and not self.upstream.stalled:
            return True, "connected"
        return False, self.state  # "stalled" while the feed is silent with data due

    # ---- lease -------------------------------------------------------------------------------

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.link.run())
            group.create_task(self._lease_loop())

    async def _lease_loop(self) -> None:
        while True:
            started = time.monotonic()
            if self.active and not self._lease.proven():
                logger.warning(
                    "ingestor %s could not renew the lease within %d ms: dropping upstream",
                    self.instance,
                    self._ttl_ms,
                )
                await self._deactivate()
            try:
                view = await self._lease_round()
            except TimeoutError:  # before REDIS_ERRORS, which holds OSError
                continue  # no answer while the proof held: step down at the top
            except REDIS_ERRORS as error:
                self.link.failed(error)
                await self._wait_for_redis()
                continue
            if view.held and not self.active:
                logger.info("ingestor %s holds the lease: active", self.instance)
                self._activate()
            elif not view.held and self.active:
                logger.warning("ingestor %s lost the lease: dropping upstream", self.instance)
                await self._deactivate()
            elif view.held and self._active_task is not None and self._active_task.done():
                _log_crash(self._active_task)
                self._activate()
            await asyncio.sleep(self._timing.next_try(view, time.monotonic() - started))

    async def _lease_round(self) -> LeaseView:
        """Renew or take the lease (a standby in its grace period only waits)."""
        if not self.active:
            grace = self._standby_grace_until - time.monotonic()
            if grace > 0:
                return LeaseView(held=False, holder_ttl=grace)
            return await guarded(self._lease.acquire())
        # An answer after the proof ran out would prove nothing: stop waiting for it then.
        async with asyncio.timeout(self._lease.remaining()):
            return await guarded(self._lease.acquire())

    async def _wait_for_redis(self) -> None:
        """Wait for Redis after a failed lease call. The active instance keeps streaming while
        its proof holds (nobody can take the lease meanwhile), then stops; when Redis is back
        it renews or retakes the lease at once, and standbys give it a TTL to do so."""
        was_active = self.active
        if was_active:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lease.remaining()):
                    await self.link.wait_up()
            if not self.link.ok:
                logger.warning(
                    "ingestor %s cannot reach Redis to renew the lease: dropping upstream",
                    self.instance,
                )
                await self._deactivate()
        await self.link.wait_up()
        if not was_active:
            self._standby_grace_until = time.monotonic() + self._ttl_ms / 1000

    def _activate(self) -> None:
        self.active = True
        self.demand.reread()
        self._reporter.changed()
        self._active_task = asyncio.create_task(self._run_active(), name="ingestor active")

    async def _deactivate(self) -> None:
        task, self._active_task = self._active_task, None
        if task is not None:
            await cancel_and_wait([task])
        self._set_inactive()
        self._reporter.set_state("standby")

    def _set_inactive(self) -> None:
        self.active = False
        self._lease.forget()
        self.demand.forget()
        self.processor.forget()
        self.publisher.forget()
        if self.framelog is not None:
            self.framelog.forget()
        self.upstream.forget()

    async def _run_active(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.publisher.run())
                if self.framelog is not None:
                    group.create_task(self.framelog.run())
                group.create_task(self._events_loop())
                group.create_task(self.demand.run())
                group.create_task(self.upstream.run())
                group.create_task(self._reporter.run())
        except* Exception:
            # Reported by the lease loop, which restarts the session after a pause.
            await asyncio.sleep(1)
            raise

    # ---- Redis events ------------------------------------------------------------------------

    def _redis_recovered(self) -> None:
        self.demand.redis_recovered()
        self.upstream.recheck_token()
        self._reporter.changed()

    async def _events_loop(self) -> None:
        while True:
            await self.link.wait_up()
            pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await guarded(pubsub.subscribe(rc.DEMAND_EVENTS, rc.TOKEN_EVENTS))
                # Events may have been missed while we were not listening: look again.
                self.demand.changed()
                self.upstream.recheck_token()
                while True:
                    message = await guarded(pubsub.get_message(timeout=5.0))
                    if message is None:
                        continue
                    channel = as_text(message["channel"])
                    if channel == rc.DEMAND_EVENTS:
                        self.demand.changed()
                    elif channel == rc.TOKEN_EVENTS:
                        self.upstream.token_event(message["data"])
            except REDIS_ERRORS as error:
                self.link.failed(error)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await guarded(pubsub.aclose())  # type: ignore[no-untyped-call]


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the active session failed; restarting it", exc_info=task.exception())
