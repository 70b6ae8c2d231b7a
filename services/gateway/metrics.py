"""Prometheus metrics of one replica, read from the hub's plain counters at scrape time.

The hot path only bumps integers; nothing here runs per tick. Each app has its own registry, so
several replicas can live in one process (the tests run two).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from services.gateway.hub import Hub
from services.gateway.protocol import ERROR_CODES

PREFIX = "tickstream_gateway_"


class HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        fan = hub.fanout.stats
        stats = hub.stats

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        yield gauge("clients", "Connected WebSocket clients", len(hub.clients))
        yield gauge("channels", "Redis tick channels subscribed", len(hub.fanout.channels))
        yield gauge(
            "subscriptions", "Client subscriptions (client x key)", hub.fanout.subscription_count
        )
        yield gauge("redis_up", "1 when the Redis link is up", 1 if hub.redis_up else 0)
        yield counter("connections", "WebSocket connections accepted", stats.connections)
        yield counter("ticks_received", "Tick messages received from Redis", fan.messages)
        yield counter("feed_frames", "live_feed and initial_feed frames sent", fan.frames)
        yield counter("feed_bytes", "Bytes of feed frames sent", fan.bytes)
        yield counter(
            "control_frames", "Control frames sent (ack, error, status...)", stats.control_frames
        )
        yield counter("control_bytes", "Bytes of control frames sent", stats.control_bytes)
        yield counter("updates_delivered", "Instrument updates written to clients", fan.delivered)
        yield counter(
            "updates_conflated",
            "Updates superseded by a newer one while their client was behind",
            fan.conflated,
        )
        yield counter(
            "slow_clients_dropped", "Clients closed as slow consumers", stats.slow_dropped
        )
        yield counter(
            "idle_clients_dropped", "Clients closed after the idle timeout", stats.idle_dropped
        )
        yield counter(
            "oversize_closed", "Clients closed for an oversized frame", stats.oversize_closed
        )
        yield counter("redis_reconnects", "Redis link (re)establishments", stats.redis_reconnects)
        yield counter("demand_writes", "Demand hash writes", hub.demand.writes)
        errors = CounterMetricFamily(
            PREFIX + "client_errors", "Error frames sent to clients, by code", labels=["code"]
        )
        for code in ERROR_CODES:
            errors.add_metric([code], stats.errors.get(code, 0))
        yield errors
        for name, doc, buckets in (
            (
                "tick_lag_seconds",
                "Upstream frame time to arrival here (1 in 16 ticks)",
                hub.tick_lag,
            ),
            ("flush_seconds", "Duration of one flush pass (all due frames)", hub.flush_time),
        ):
            yield HistogramMetricFamily(
                PREFIX + name, doc, buckets=buckets.cumulative(), sum_value=buckets.total
            )
        rejected = CounterMetricFamily(
            PREFIX + "handshakes_refused",
            "WebSocket handshakes refused, by reason",
            labels=["reason"],
        )
        for reason in ("origin", "unauthorized", "path", "handshake"):
            rejected.add_metric([reason], stats.rejected.get(reason, 0))
        yield rejected


def registry_for(hub: Hub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry
