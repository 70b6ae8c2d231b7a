"""The ingestor's asyncio shell: lease, token, upstream connection, demand, publishing.

```
lease loop (always) ── holds the lease? ──► active session (TaskGroup)
                                            ├─ events: DEMAND_EVENTS + TOKEN_EVENTS (pub/sub)
                                            ├─ demand: SCAN demand hashes -> plan -> requests
                                            ├─ upstream: token -> authorize -> connect -> read
                                            ├─ publisher: batches of ticks -> Redis
                                            └─ status: INGESTOR_STATUS (+ INGESTOR_EVENTS)
Redis link (always): probes with backoff after a failure, then republishes and re-reads demand
```

Everything that decides (planning, rendering, sequencing) lives in the pure modules
`subscriptions` and `processor`; this module only moves bytes and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from services.ingestor.demand import read_demand
from services.ingestor.failures import UPSTREAM_ERRORS, UpstreamError, UpstreamFailure, classify
from services.ingestor.lease import Lease
from services.ingestor.metrics import IngestorMetrics
from services.ingestor.processor import PART_FEEDS, TickProcessor
from services.ingestor.publisher import Publisher
from services.ingestor.settings import IngestorSettings
from services.ingestor.status import StatusReporter
from services.ingestor.subscriptions import (
    ModeLimits,
    Plan,
    Refusal,
    aggregate_demand,
    diff_requests,
    plan,
)
from shared import redis_contract as rc
from shared.instruments import Mode, count_modes
from shared.redis_client import connect_redis
from shared.redis_link import RedisLink, guarded
from shared.render import RenderError
from shared.sessions import SessionDecryptError, SessionStore
from shared.upstox.backoff import Backoff
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError, UpstoxError

__all__ = ["Ingestor"]

logger = logging.getLogger(__name__)

# websockets logs handshake request lines at DEBUG, and the one-time feed URL's query holds a
# code: its logger for our connection never goes below INFO, whatever LOG_LEVEL says.
_ws_logger = logging.getLogger("tickstream.ingestor.feed")
_ws_logger.setLevel(logging.INFO)

# Let the publisher run once this many ticks wait, even while frames keep arriving.
_YIELD_BACKLOG = 4000


class Ingestor:
    """One ingestor instance. `await start()`, later `await stop()` (or `abort()`, like a crash).

    Several instances may run against one Redis: exactly one (the lease holder) is active.
    """

    def __init__(self, settings: IngestorSettings, metrics: IngestorMetrics | None = None) -> None:
        self.settings = settings
        self.instance = settings.ingestor_instance_id
        self.metrics = metrics or IngestorMetrics()
        self.processor = TickProcessor()
        self.active = False
        self.plan = Plan()
        self._limits = ModeLimits(
            settings.ingestor_mode_limits, settings.ingestor_combined_mode_limits
        )
        self._static = settings.static_demand()
        self._ttl_ms = settings.ingestor_lease_ttl_ms
        self._redis = connect_redis(settings.redis_url)
        self._link = RedisLink(self._redis, self._backoff())
        self.metrics.watch_redis(self._link)
        self._lease = Lease(self._redis, self.instance, self._ttl_ms)
        self._sessions = SessionStore(self._redis, settings.token_encryption_key)
        self._upstox = UpstoxClient(settings.upstox_base_url, settings.upstox_timeout_seconds)
        self._publisher = Publisher(
            self._link,
            self.metrics,
            last_value_ttl=settings.ingestor_last_value_ttl_seconds,
            max_pending=settings.ingestor_max_pending_ticks,
            latest=self.processor.latest,
            latest_market_info=lambda: self.processor.market_info,
        )
        self._reporter = StatusReporter(
            self._link, self, self.metrics, instance=self.instance, ttl_ms=self._ttl_ms
        )
        self._link.on_recover.append(self._publisher.republish_all)
        self._link.on_recover.append(self._redis_recovered)
        self._main_task: asyncio.Task[None] | None = None
        self._active_task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._user: str | None = None
        self._subscribed: dict[str, Mode] = {}
        self._send_lock = asyncio.Lock()
        self._demand_changed = asyncio.Event()
        self._token_changed = asyncio.Event()
        self._rejected_token: str | None = None
        self._standby_grace_until = 0.0
        self._demand_grace_until = 0.0
        self._refusals_written: dict[str, str] | None = None
        self._ever_connected = False
        self._malformed_burst = 0
        self._opened_at: float | None = None
        self._closers: set[asyncio.Task[None]] = set()

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
        tasks = [t for t in (self._main_task, self._active_task, *self._closers) if t is not None]
        await _cancel(*tasks)
        self._set_inactive()
        if release and was_active:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._reporter.write_stopped()
                    await guarded(self._lease.release())
        self._reporter.set_state("stopped")
        await self._upstox.aclose()
        await self._redis.aclose()
        logger.info("ingestor %s stopped", self.instance)

    # ---- what others look at -----------------------------------------------------------------

    @property
    def state(self) -> rc.IngestorState:
        return self._reporter.state

    @property
    def upstream_connected(self) -> bool:
        return self._ws is not None

    @property
    def redis_ok(self) -> bool:
        return self._link.ok

    @property
    def epoch(self) -> str:
        return self.processor.epoch

    @property
    def subscribed(self) -> Mapping[str, Mode]:
        """What is subscribed upstream right now (empty while disconnected)."""
        return self._subscribed

    def readiness(self) -> tuple[bool, str]:
        if not self._link.ok:
            return False, "redis unreachable"
        if not self.active:
            return self.state == "standby", self.state
        if self._ws is not None:
            return True, "connected"
        return False, self.state

    # ---- lease -------------------------------------------------------------------------------

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._link.run())
            group.create_task(self._lease_loop())

    async def _lease_loop(self) -> None:
        interval = self._ttl_ms / 3000
        while True:
            may_take = self.active or time.monotonic() >= self._standby_grace_until
            try:
                held = await guarded(self._lease.acquire()) if may_take else False
            except (RedisError, OSError) as error:
                # The active instance keeps its upstream through an outage; when Redis is back
                # it renews (or retakes) the lease at once, and standbys give it a TTL to do so.
                self._link.failed(error)
                await self._link.wait_up()
                self._standby_grace_until = time.monotonic() + self._ttl_ms / 1000
                continue
            if held and not self.active:
                logger.info("ingestor %s holds the lease: active", self.instance)
                self._activate()
            elif not held and self.active:
                logger.warning("ingestor %s lost the lease: dropping upstream", self.instance)
                await self._deactivate()
            elif held and self._active_task is not None and self._active_task.done():
                self._log_crash(self._active_task)
                self._activate()
            await asyncio.sleep(interval)

    def _activate(self) -> None:
        self.active = True
        self.metrics.active.set(1)
        self._demand_changed.set()
        self._reporter.changed()
        self._refusals_written = None
        self._active_task = asyncio.create_task(self._run_active(), name="ingestor active")

    async def _deactivate(self) -> None:
        task, self._active_task = self._active_task, None
        if task is not None:
            await _cancel(task)
        self._set_inactive()
        self._reporter.set_state("standby")

    def _set_inactive(self) -> None:
        self.active = False
        self.metrics.active.set(0)
        self.plan = Plan()
        self.processor.forget()
        self._set_subscribed({})

    @staticmethod
    def _log_crash(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the active session failed; restarting it", exc_info=task.exception())

    async def _run_active(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publisher.run())
                group.create_task(self._events_loop())
                group.create_task(self._demand_loop())
                group.create_task(self._upstream_loop())
                group.create_task(self._reporter.run())
        except* Exception:
            # Reported by the lease loop, which restarts the session after a pause.
            await asyncio.sleep(1)
            raise

    # ---- Redis events ------------------------------------------------------------------------

    def _redis_recovered(self) -> None:
        self._demand_grace_until = time.monotonic() + self.settings.ingestor_demand_grace_seconds
        self._refusals_written = None
        self._demand_changed.set()
        self._token_changed.set()
        self._reporter.changed()

    async def _events_loop(self) -> None:
        while True:
            await self._link.wait_up()
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await guarded(pubsub.subscribe(rc.DEMAND_EVENTS, rc.TOKEN_EVENTS))
                # Events may have been missed while we were not listening: look again.
                self._demand_changed.set()
                self._token_changed.set()
                while True:
                    message = await guarded(pubsub.get_message(timeout=5.0))
                    if message is None:
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    if channel == rc.DEMAND_EVENTS:
                        self._demand_changed.set()
                    elif channel == rc.TOKEN_EVENTS:
                        self._token_event(message["data"])
            except (RedisError, OSError) as error:
                self._link.failed(error)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await guarded(pubsub.aclose())  # type: ignore[no-untyped-call]

    def _token_event(self, data: object) -> None:
        try:
            event = rc.TokenEvent.model_validate_json(data)  # type: ignore[arg-type]
        except ValueError:
            logger.warning("ignoring an unreadable token event")
            return
        self._token_changed.set()
        ws = self._ws
        if event.event == "logout" and event.user_id == self._user and ws is not None:
            logger.info("%s logged out: closing the feed connection", event.user_id)
            closer = asyncio.create_task(ws.close(reason="logged out"))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)

    # ---- demand ------------------------------------------------------------------------------

    async def _demand_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ingestor_demand_rescan_seconds):
                    await self._demand_changed.wait()
            self._demand_changed.clear()
            await self._link.wait_up()
            try:
                tables = await guarded(read_demand(self._redis))
            except (RedisError, OSError) as error:
                self._link.failed(error)
                continue
            await self._replan(tables)

    async def _replan(self, tables: Mapping[str, Mapping[str, set[Mode]]]) -> None:
        demand = aggregate_demand([self._static, *tables.values()])
        if time.monotonic() < self._demand_grace_until:
            # Redis came back empty-handed moments ago: gateways are still rewriting their
            # demand, so keep what is subscribed rather than drop it and subscribe it again.
            for key, mode in self._subscribed.items():
                demand.setdefault(key, set(self.plan.render.get(key, {mode})))
        current = self._subscribed or self.plan.upstream
        new = plan(demand, self._limits, current=current, priority=self._static)
        self.plan = new
        self.processor.set_render(new.render)
        await self._apply_plan()
        await self._write_refusals(new.refused)
        self.metrics.refused.set(len(new.refused))

    async def _apply_plan(self) -> None:
        async with self._send_lock:
            ws = self._ws
            if ws is None:
                return
            target = dict(self.plan.upstream)
            requests = diff_requests(self._subscribed, target, self.settings.ingestor_batch_size)
            try:
                for request in requests:
                    await ws.send(request.encode())  # bytes: a binary frame, as Upstox wants
            except ConnectionClosed:
                return  # the reader sees it too; everything is subscribed again on reconnect
            if requests:
                logger.info(
                    "upstream subscriptions: %s (%d requests)",
                    ", ".join(
                        f"{mode} {n}" for mode, n in count_modes(target.values()).items() if n
                    ),
                    len(requests),
                )
            self._set_subscribed(target)

    def _set_subscribed(self, subscribed: dict[str, Mode]) -> None:
        self._subscribed = subscribed
        for mode, count in count_modes(subscribed.values()).items():
            self.metrics.subscribed.labels(mode=mode).set(count)
        self._reporter.changed()

    async def _write_refusals(self, refused: Mapping[str, Refusal]) -> None:
        values = {key: rc.encode_refusal(r.modes, r.reason) for key, r in refused.items()}
        if values == self._refusals_written:
            return
        if values and len(values) != len(self._refusals_written or {}):
            logger.warning("%d demanded keys refused (over Upstox's per-mode limits)", len(values))
        status = self._reporter.current()
        try:
            await guarded(self._replace_refusals(values, status))
        except (RedisError, OSError) as error:
            self._link.failed(error)
            return
        self._refusals_written = values

    async def _replace_refusals(self, values: dict[str, str], status: rc.IngestorStatus) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(rc.INGESTOR_REFUSED)
            if values:
                pipe.hset(rc.INGESTOR_REFUSED, mapping=values)  # type: ignore[arg-type]
            pipe.publish(rc.INGESTOR_EVENTS, status.model_dump_json())
            await pipe.execute()

    # ---- tokens ------------------------------------------------------------------------------

    async def _wait_token(self) -> tuple[str, str]:
        told = False
        while True:
            self._token_changed.clear()
            await self._link.wait_up()
            found: tuple[str, str] | None = None
            try:
                found = await guarded(self._sessions.active_token())
            except (RedisError, OSError) as error:
                self._link.failed(error)
                continue
            except SessionDecryptError as error:
                logger.error("%s", error)
            if found is not None and found[1] != self._rejected_token:
                return found
            if not told:
                logger.info("no usable Upstox token: waiting for a login")
                told = True
            self._reporter.set_state("waiting_token")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.ingestor_token_recheck_seconds):
                    await self._token_changed.wait()

    async def _token_rejected(self, user: str, token: str, failure: UpstreamFailure) -> None:
        logger.warning(
            "%s: marking the session of %s invalid and waiting for a new login",
            failure.message,
            user,
        )
        self._rejected_token = token
        try:
            await guarded(self._sessions.mark_invalid(user, rejected_token=token))
        except (RedisError, OSError) as error:
            self._link.failed(error)

    # ---- upstream ----------------------------------------------------------------------------

    async def _upstream_loop(self) -> None:
        backoff = self._backoff()
        stable = self.settings.ingestor_stable_after_seconds
        while True:
            user, token = await self._wait_token()
            self._reporter.set_state("connecting")
            self._opened_at = None
            try:
                url = await self._authorize(token)
                ended: UpstreamError = await self._connection(url, user)
            except UPSTREAM_ERRORS as error:
                ended = error
            failure = classify(ended)
            self.metrics.upstream_failures.labels(reason=failure.reason).inc()
            if failure.is_auth:
                await self._token_rejected(user, token, failure)
                backoff.reset()  # a new token deserves an immediate attempt
                continue
            logger.warning("%s", failure.message)
            if self._opened_at is not None and time.monotonic() - self._opened_at >= stable:
                backoff.reset()
            await self._pause(backoff)

    async def _authorize(self, token: str) -> str:
        try:
            url = await self._upstox.authorize_feed(token)
        except UpstoxError as error:
            outcome = "auth" if isinstance(error, UpstoxAuthError) else "error"
            self.metrics.authorize_calls.labels(outcome=outcome).inc()
            raise
        self.metrics.authorize_calls.labels(outcome="ok").inc()
        return url

    async def _connection(self, url: str, user: str) -> ConnectionClosed:
        """Connect and serve until the connection closes; how it closed, when it did cleanly
        (a failure raises)."""
        async with self._connect(url) as ws:
            self._opened_at = time.monotonic()
            await self._serve(ws, user)
        return ws.protocol.close_exc

    def _connect(self, url: str) -> ws_connect:
        s = self.settings
        # No `ssl` argument: wss:// URLs get the default context, certificates verified.
        return ws_connect(
            url,
            ping_interval=s.ingestor_ping_interval,
            ping_timeout=s.ingestor_ping_timeout,
            open_timeout=s.ingestor_open_timeout,
            close_timeout=2,
            max_size=s.ingestor_max_frame_bytes,
            max_queue=64,
            compression=None,  # like Upstox's SDK: frames are protobuf, deflate would cost CPU
            user_agent_header="tickstream-ingestor",
            logger=_ws_logger,
        )

    async def _pause(self, backoff: Backoff) -> None:
        self._reporter.set_state("backoff")
        await asyncio.sleep(backoff.next_delay())

    async def _serve(self, ws: ClientConnection, user: str) -> None:
        epoch = self.processor.new_epoch()
        self._user = user
        self._rejected_token = None
        self.metrics.connections.inc()
        if self._ever_connected:
            self.metrics.reconnects.inc()
        self._ever_connected = True
        self._set_subscribed({})
        self._ws = ws
        self.metrics.upstream_connected.set(1)
        self._reporter.set_state("connected")
        logger.info("connected to the feed as %s (epoch %s)", user, epoch)
        try:
            await self._apply_plan()
            await self._read(ws)
        finally:
            self._ws = None
            self.metrics.upstream_connected.set(0)
            self._set_subscribed({})

    async def _read(self, ws: ClientConnection) -> None:
        process_parts = self.processor.process_parts
        submit = self._publisher.submit
        publisher = self._publisher
        frames = self.metrics.frames
        feeds = self.metrics.feeds
        clock = time.monotonic
        async for message in ws:
            received = clock()
            try:
                if isinstance(message, str):
                    raise RenderError("a text frame (the feed sends binary protobuf)")
                for result in process_parts(message, PART_FEEDS):
                    result.received = received
                    if result.feeds:
                        feeds.inc(result.feeds)
                    submit(result)
                    if result.more or publisher.backlog >= _YIELD_BACKLOG:
                        # Let the publisher send this much while the rest is rendered.
                        await asyncio.sleep(0)
            except Exception as error:  # a bad frame must never end the session
                self._malformed(error)
                continue
            frames.inc()
            if self._malformed_burst:
                logger.warning("%d malformed frames skipped in that burst", self._malformed_burst)
                self._malformed_burst = 0

    def _malformed(self, error: Exception) -> None:
        self.metrics.decode_errors.inc()
        if self._malformed_burst == 0:
            if isinstance(error, RenderError):
                logger.warning("skipping a malformed frame from the feed: %s", error)
            else:
                logger.error("skipping a frame that could not be processed", exc_info=error)
        self._malformed_burst += 1

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.ingestor_backoff_initial, self.settings.ingestor_backoff_max)


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    """Cancel and wait for `tasks`, cancelling again any that swallowed the request (a
    library that catches CancelledError mid-call must not keep a stopping ingestor alive)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{mode} {n}" for mode, n in counts.items() if n)
