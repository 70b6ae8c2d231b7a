"""The hub: one replica's clients, their requests, and the live feed to them.

Owns the client registry, command handling (the rules are pure functions in `commands`; the hub
applies their decisions: channel changes to the broker and the demand writer, frames to the
client, then the snapshot), the instrument catalogue requests are checked against (loaded
before the first client, kept current by its own task), the dispatch of pub/sub messages
(ticks straight to the pure `FanOut`, events to `UpstreamStatus`), flush scheduling, the
`status` frames clients get, the drain before a stop (`drain.py`), and the counters. Clients of
Upstox's protocol (`wires.UPSTOX`) have a fan-out and snapshots of their own, sharing the
replica's demand, and get only feed frames and the market status in protobuf. It is the
broker's `BrokerHandler`: it keeps channels' `ready`/`fresh` flags and runs the resync. It must
not talk to Redis itself: the broker, the demand writer, the upstream status and the snapshots
do.

Ordering that matters:
- pub/sub commands are written without waiting, in the order they are issued; a client's
  subscribe waits for a PING barrier only when one of its channels is not yet confirmed, so its
  snapshot (read after the barrier) can never miss an update published in between;
- frames go out when the gateway has nothing more to read, or at the coalescing bound
  (`fanout.FlushPacer`: the delivery timing rules are in `fanout`'s docstring); a subscriber
  whose socket still holds bytes waits for a later flush, a bound at most; while flushes run
  late (overload) the fan-out stops flushing early and conflates instead;
- on (re)connection the resync rewrites the demand and rereads the upstream state before
  clients are told Redis is up, then resends every client's snapshot (updates published during
  the outage were missed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from services.gateway import commands
from services.gateway.broker import Broker
from services.gateway.commands import Decision
from services.gateway.demand import DemandWriter
from services.gateway.drain import Drain
from services.gateway.fanout import Channel, FanOut, FlushPacer, Sink, Subscriber
from services.gateway.instruments import SIMULATOR, CatalogueError, CatalogueSource
from services.gateway.protocol import (
    Command,
    ProtocolError,
    Snapshot,
    Subscribe,
    Unsubscribe,
    pong_frame,
)
from services.gateway.settings import GatewaySettings
from services.gateway.snapshots import Snapshots
from services.gateway.timing import FLUSH_BUCKETS, LAG_BUCKETS, Buckets, tick_ts_ms
from services.gateway.upstream_status import UpstreamStatus
from services.gateway.wires import JSON, UPSTOX, Wire
from services.gateway.wsframe import text_frame
from shared import redis_contract as rc
from shared.feed_protocol import FeedRequest, Subscriptions
from shared.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

LAG_SAMPLE_EVERY: Final = 16  # tick messages per lag sample
_MARKET_INFO_EVENTS: Final = rc.MARKET_INFO_EVENTS.encode()
_INGESTOR_EVENTS: Final = rc.INGESTOR_EVENTS.encode()


@dataclass(slots=True)
class HubStats:
    connections: int = 0  # accepted WebSocket connections, ever
    rejected: Counter[str] = field(default_factory=Counter)  # handshakes refused, by reason
    errors: Counter[str] = field(default_factory=Counter)  # error frames sent, by code
    control_frames: int = 0
    control_bytes: int = 0
    slow_dropped: int = 0
    idle_dropped: int = 0
    oversize_closed: int = 0
    redis_reconnects: int = 0


class Hub:
    """The fan-out engine of one replica. `start()` in the app's lifespan, `stop()` at the end."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.replica_id = settings.gateway_replica_id
        self.fanout = FanOut()
        self.upstox = FanOut(wire=UPSTOX, demand=self.fanout.demand)
        self.upstox_market_info: bytes | None = None  # the binary frame
        self.stats = HubStats()
        self.clients: dict[Subscriber, None] = {}
        self.broker = Broker(
            settings.redis_url,
            self,
            (_MARKET_INFO_EVENTS, _INGESTOR_EVENTS),
            probe_seconds=settings.gateway_pubsub_probe_seconds,
            cluster=settings.redis_cluster,
        )
        # Clients hear of every change of the Redis health, down or back up.
        self.broker.health.on_fail.append(self._announce_status)
        self.broker.health.on_recover.append(self._announce_status)
        self.upstream = UpstreamStatus(
            self.broker,
            on_state=self._announce_status,
            on_market_info=self._market_info_changed,
            on_refused=self._report_refused,
        )
        self.demand = DemandWriter(
            self.replica_id,
            settings.gateway_demand_lease_seconds,
            self.fanout,
            self.upstox,
            self.broker,
            on_ingestor_status=self.upstream.on_ingestor_status,
        )
        # The keys clients may subscribe: loaded at start, refreshed by a task of its own.
        self.catalogue = CatalogueSource(settings.gateway_instruments_source)
        self.snapshots, self.upstox_snapshots = (
            Snapshots(
                fanout,
                self.broker,
                settings.gateway_first_value_wait_ms / 1000,
                refused=lambda channel: commands.is_refused(channel, self.upstream.refused),
            )
            for fanout in (self.fanout, self.upstox)
        )
        # On SIGTERM: clients told to reconnect, spread over the window (the server runs it).
        self.drain = Drain(
            self.clients, settings.gateway_drain_seconds, settings.gateway_close_timeout_seconds
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._held_handle: asyncio.TimerHandle | None = None  # subscribers with a backlog
        self.pacer = FlushPacer(settings.flush_interval)
        self.tick_lag = Buckets(LAG_BUCKETS)  # upstream frame time -> received here (sampled)
        self.flush_time = Buckets(FLUSH_BUCKETS)  # one flush pass, writing every due frame
        self._sample_countdown = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.broker.open()
        await self._load_catalogue()
        for name, coroutine in (
            ("link", self.broker.run()),
            ("demand", self.demand.run()),
            ("heartbeat", self.demand.keep_lease()),
            ("refused", self.upstream.run()),
            ("catalogue", self.catalogue.run()),
        ):
            self._tasks.append(asyncio.create_task(coroutine, name=f"gateway-{name}"))

    async def _load_catalogue(self) -> None:
        """The first load, before any client: a subscribe never finds it missing unless the
        source failed (then the catalogue task retries, and subscribes are refused)."""
        if self.catalogue.source == SIMULATOR and "upstox.com" in self.settings.upstox_base_url:
            logger.error(
                "GATEWAY_INSTRUMENTS_SOURCE is the simulator's universe while UPSTOX_BASE_URL "
                "is Upstox: most real keys will be refused as unknown; set it to Upstox's "
                "instrument master"
            )
        try:
            catalogue = await self.catalogue.get()
        except CatalogueError as error:
            logger.error("%s; subscriptions are refused until it loads", error)
            return
        logger.info("%d instruments may be subscribed", len(catalogue))

    async def stop(self) -> None:
        """Stop the tasks and withdraw this replica's demand at once (a crash lets it lapse)."""
        linked = self.broker.connected  # read first: cancelling the link task ends the connection
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for handle in (self._flush_handle, self._held_handle):
            if handle is not None:
                handle.cancel()
        if linked:
            await self.demand.withdraw()
        await self.broker.close()

    @property
    def redis_up(self) -> bool:
        """Redis is up as clients are told: from the end of a resync until the link fails."""
        return self.broker.health.ok

    # ---- clients ---------------------------------------------------------------------------

    def register(self, sink: Sink, wire: Wire = JSON) -> Subscriber:
        """A client connected: greet it with the market status and the service status (an
        Upstox client: the market status alone, as Upstox sends first)."""
        sub = Subscriber(sink, wire)
        self.clients[sub] = None
        self.stats.connections += 1
        if wire is UPSTOX:
            if self.upstox_market_info is not None:
                sink.send_frame(self.upstox_market_info)
            return sub
        if self.upstream.market_info is not None:
            self.send(sub, self.upstream.market_info)
        self.send(sub, self.upstream.status_frame(self.redis_up))
        return sub

    def unregister(self, sub: Subscriber) -> None:
        if self.clients.pop(sub, 0) is None:
            self._channels_changed((), self._fanout_of(sub).remove(sub))
            if self.drain.active:
                self.drain.left()

    def resume(self, sub: Subscriber) -> None:
        if self._fanout_of(sub).resume(sub):
            self._schedule_flush()

    def _fanout_of(self, sub: Subscriber) -> FanOut:
        return self.upstox if sub.wire is UPSTOX else self.fanout

    def send(self, sub: Subscriber, payload: bytes) -> None:
        """Send one control frame (ack, error, status...): never conflated, never delayed."""
        if sub.closed:
            return
        frame = text_frame(payload)
        self.stats.control_frames += 1
        self.stats.control_bytes += len(frame)
        sub.sink.send_frame(frame)

    def send_error(self, sub: Subscriber, error: ProtocolError) -> None:
        self.stats.errors[error.code] += 1
        self.send(sub, error.frame())

    def broadcast(self, payload: bytes) -> None:
        """Send a control frame to every client of our protocol."""
        frame = text_frame(payload)
        for sub in self.clients:
            if not sub.closed and sub.wire is JSON:
                self.stats.control_frames += 1
                self.stats.control_bytes += len(frame)
                sub.sink.send_frame(frame)

    def _market_info_changed(self, payload: bytes) -> None:
        self.broadcast(payload)
        frame = self.upstox_market_info = UPSTOX.market_info(payload)
        if frame is None:
            return
        for sub in self.clients:
            if not sub.closed and sub.wire is UPSTOX:
                sub.sink.send_frame(frame)

    def _announce_status(self) -> None:
        self.broadcast(self.upstream.status_frame(self.redis_up))

    # ---- requests --------------------------------------------------------------------------

    async def handle(self, sub: Subscriber, command: Command) -> None:
        """Carry out one client request (a client's requests run one at a time, in order)."""
        if isinstance(command, Subscribe):
            limit = self.settings.gateway_max_keys_per_client
            decision = commands.subscribe(
                self.fanout,
                sub,
                command,
                limit,
                known=self._known_keys(),
                max_demand_keys=self.settings.gateway_max_demand_keys,
            )
        elif isinstance(command, Unsubscribe):
            decision = commands.unsubscribe(self.fanout, sub, command)
        elif isinstance(command, Snapshot):
            decision = commands.snapshot(sub, command, self._known_keys())
        else:
            self.send(sub, pong_frame(command.request_id))
            return
        self._apply(sub, decision)
        if decision.snapshot is None:
            return
        await self.snapshots.send(sub, decision.snapshot)
        if isinstance(command, Subscribe):
            # After the snapshot: the refusals known by then are the ones reported.
            refused = commands.refusals(
                decision.snapshot, self.upstream.refused, command.request_id
            )
            self._apply(sub, refused)

    async def handle_upstox(
        self,
        sub: Subscriber,
        subscriptions: Subscriptions,
        request: FeedRequest,
        allowed: Callable[[str], bool] | None,
    ) -> None:
        """Carry out one Upstox-protocol request (`commands.upstox_request`): nothing is sent
        but the snapshot."""
        decision = commands.upstox_request(
            self.upstox,
            sub,
            subscriptions,
            request,
            known=self._known_keys(),
            allowed=allowed,
            max_demand_keys=self.settings.gateway_max_demand_keys,
        )
        self._channels_changed(decision.opened, decision.closed)
        if decision.snapshot is not None:
            await self.upstox_snapshots.send(sub, decision.snapshot)

    def _known_keys(self) -> frozenset[str] | None:
        catalogue = self.catalogue.current
        return None if catalogue is None else catalogue.keys

    def _apply(self, sub: Subscriber, decision: Decision) -> None:
        """Carry out a decision's channel changes and send its frames (not its snapshot)."""
        self._channels_changed(decision.opened, decision.closed)
        for code in decision.errors:
            self.stats.errors[code] += 1
        for frame in decision.frames:
            self.send(sub, frame)

    def _channels_changed(self, opened: Sequence[Channel], closed: Sequence[Channel]) -> None:
        if closed:
            self.broker.unsubscribe([channel.name for channel in closed])
        if opened:
            self.broker.subscribe([channel.name for channel in opened])
        if opened or closed:
            self.demand.changed(channel.key for channel in (*closed, *opened))

    def _report_refused(self, keys: Sequence[str]) -> None:
        """Keys the ingestor newly refuses: tell the clients that hold them."""
        for sub in self.clients:
            if sub.wire is UPSTOX:
                continue  # Upstox says nothing of keys it will not stream
            channels = [sub.subs[key] for key in keys if key in sub.subs]
            if channels:
                self._apply(sub, commands.refusals(channels, self.upstream.refused, None))

    # ---- live updates ----------------------------------------------------------------------

    def on_message(self, name: bytes, data: bytes) -> None:
        """Every pub/sub message, straight from the protocol callback: the hot path."""
        if name == _MARKET_INFO_EVENTS:
            self.upstream.on_market_info(data)
        elif name == _INGESTOR_EVENTS:
            self.upstream.on_ingestor_status(data)
        else:
            self._sample_countdown -= 1
            if self._sample_countdown <= 0:
                self._sample_countdown = LAG_SAMPLE_EVERY
                ts = tick_ts_ms(data)
                if ts is not None:
                    self.tick_lag.observe(max(0.0, time.time() - ts / 1000))
            # A flush running late means the replica cannot keep up with its input: stop
            # multiplying frames for keys that tick again before their pending flush.
            fanout = self.fanout
            upstox = self.upstox
            if upstox.by_name and name in upstox.by_name:
                fanout = upstox
            eager = self._loop is None or not self.pacer.overloaded(self._loop.time())
            fanout.eager = upstox.eager = eager
            if fanout.publish(name, data):
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None or self._loop is None:
            return
        now = self._loop.time()
        self.pacer.observe(now, time.process_time())
        window = self.pacer.begin(now)
        if window > 0:
            self._flush_handle = self._loop.call_later(window, self._settle)
        else:
            self._flush_handle = self._loop.call_soon(self._settle)

    def _settle(self) -> None:
        """Once per event-loop pass while frames are pending: flush when the pacer says so."""
        assert self._loop is not None
        received = self.fanout.stats.messages + self.upstox.stats.messages
        if self.pacer.due(self._loop.time(), received):
            self._flush()
        else:
            self._flush_handle = self._loop.call_soon(self._settle)

    def _flush(self) -> None:
        """The paced flush: subscribers whose sockets still hold bytes are held, for at most
        the bound (`_flush_held`)."""
        self._flush_handle = None
        self._flush_pass(hold=True)
        if (self.fanout.held or self.upstox.held) and self._held_handle is None:
            assert self._loop is not None
            interval = self.settings.flush_interval
            self._held_handle = self._loop.call_later(interval, self._flush_held)

    def _flush_held(self) -> None:
        self._held_handle = None
        self._flush_pass(hold=False)

    def _flush_pass(self, *, hold: bool) -> None:
        started = time.perf_counter()
        if self.fanout.flush(hold=hold) + self.upstox.flush(hold=hold):
            self.flush_time.observe(time.perf_counter() - started)

    # ---- the broker's reports --------------------------------------------------------------

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        by_name, upstox = self.fanout.by_name, self.upstox.by_name
        for name in names:
            channel = by_name.get(name) or upstox.get(name)
            if channel is not None:
                channel.ready = True

    async def on_up(self, names: Collection[bytes] | None = None) -> None:
        """The resync: rewrite the demand and reread the upstream state, tell clients Redis is
        up, then resend the snapshots of `names` (None: every client's, of all its keys) to
        the clients holding them. On a cluster `names` are one master's, or channels moved."""
        await self.demand.write_all()
        await self.upstream.resync()
        self.broker.recovered()  # clients are told once every connection is up
        if self.stats.redis_reconnects:
            logger.info("Redis link restored; resending snapshots to %d clients", len(self.clients))
        self.stats.redis_reconnects += 1
        await self.snapshots.resend_all(self._clients_of(JSON), names)
        await self.upstox_snapshots.resend_all(self._clients_of(UPSTOX), names)

    def _clients_of(self, wire: Wire) -> list[Subscriber]:
        return [sub for sub in self.clients if sub.wire is wire]

    def on_down(self, names: Collection[bytes] | None = None) -> None:
        # Until resubscribed and confirmed, nothing in memory is known to be current.
        for fanout in (self.fanout, self.upstox):
            if names is None:
                channels: Iterable[Channel] = fanout.channels.values()
            else:
                channels = filter(None, map(fanout.by_name.get, names))
            for channel in channels:
                channel.ready = channel.fresh = False

    # ---- introspection ---------------------------------------------------------------------

    def snapshot_stats(self) -> dict[str, object]:
        fan = self.fanout.stats
        return {
            "replica": self.replica_id,
            "clients": len(self.clients),
            "channels": len(self.fanout.channels),
            "subscriptions": self.fanout.subscription_count,
            "redis": "up" if self.redis_up else "down",
            "messages": fan.messages,
            "frames": fan.frames,
            "delivered": fan.delivered,
            "conflated": fan.conflated,
            "slow_dropped": self.stats.slow_dropped,
        }


__all__ = ["Hub", "HubStats"]
