"""Prometheus metrics of one ingestor instance (its own registry, so tests can run several)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.instruments import Mode
from shared.metrics import counter
from shared.redis_contract import IngestorState
from shared.redis_link import RedisLink

STATES: tuple[IngestorState, ...] = (
    "starting",
    "standby",
    "waiting_token",
    "connecting",
    "connected",
    "backoff",
    "stopped",
)

# Exchange time -> published: sub-millisecond when idle, seconds when Redis or upstream lag.
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "tickstream_ingestor_frames", "Frames received from the upstream feed.", registry=r
        )
        self.feeds = Counter(
            "tickstream_ingestor_feeds",
            "Instrument updates received (feeds entries of every frame).",
            registry=r,
        )
        self.published = Counter(
            "tickstream_ingestor_published",
            "Tick payloads published to Redis (one per instrument per mode with demand).",
            registry=r,
        )
        self.decode_errors = Counter(
            "tickstream_ingestor_decode_errors",
            "Upstream frames skipped because they could not be decoded.",
            registry=r,
        )
        self.state = Gauge(
            "tickstream_ingestor_state",
            "1 for the state this instance is in.",
            ["state"],
            registry=r,
        )
        self.active = Gauge(
            "tickstream_ingestor_active", "1 while this instance holds the lease.", registry=r
        )
        self.upstream_connected = Gauge(
            "tickstream_ingestor_upstream_connected",
            "1 while the upstream feed connection is open.",
            registry=r,
        )
        self.connections = Counter(
            "tickstream_ingestor_upstream_connections",
            "Upstream feed connections opened.",
            registry=r,
        )
        self.reconnects = Counter(
            "tickstream_ingestor_upstream_reconnects",
            "Upstream connections opened after an earlier one was lost.",
            registry=r,
        )
        self.upstream_failures = Counter(
            "tickstream_ingestor_upstream_failures",
            "Failed or lost upstream connections, by reason.",
            ["reason"],
            registry=r,
        )
        self.authorize_calls = Counter(
            "tickstream_ingestor_authorize_calls",
            "Feed authorize calls, by outcome (ok, auth, error).",
            ["outcome"],
            registry=r,
        )
        self.subscribed = Gauge(
            "tickstream_ingestor_subscribed_keys",
            "Keys subscribed upstream, per mode.",
            ["mode"],
            registry=r,
        )
        self.refused = Gauge(
            "tickstream_ingestor_refused_keys",
            "Demanded keys (or some of their modes) refused because of a limit.",
            registry=r,
        )
        self.lag = Histogram(
            "tickstream_ingestor_lag_seconds",
            "Frame time (currentTs) to the moment Redis acknowledged its publication.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "tickstream_ingestor_processing_seconds",
            "Frame received from upstream to Redis acknowledging its publication (our own part "
            "of the lag).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.shed = Counter(
            "tickstream_ingestor_ticks_shed",
            "Ticks not published because Redis was down or too slow (their latest values are "
            "published again once it recovers).",
            registry=r,
        )
        for state in STATES:
            self.state.labels(state=state).set(0)
        for mode in Mode:
            self.subscribed.labels(mode=mode.value).set(0)
        for reason in ("auth", "unavailable", "handshake", "closed", "error"):
            self.upstream_failures.labels(reason=reason)
        for outcome in ("ok", "auth", "error"):
            self.authorize_calls.labels(outcome=outcome)

    def watch_redis(self, link: RedisLink) -> None:
        """Expose the link's own count of failed Redis operations."""
        self.registry.register(_RedisErrors(link))

    def set_state(self, state: IngestorState) -> None:
        for name in STATES:
            self.state.labels(state=name).set(1 if name == state else 0)


class _RedisErrors(Collector):
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def collect(self) -> Iterator[Metric]:
        yield counter(
            "tickstream_ingestor_redis_errors", "Failed Redis operations.", self._link.errors
        )
