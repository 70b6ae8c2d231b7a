"""Prometheus metrics of one replica, read from the hub and its parts at scrape time.

The hot path only bumps integers; nothing here runs per tick. The counts live where they happen
(`HubStats`, `FanOutStats`, the demand writer, the hub's `Buckets`); `HubCollector` turns them
into metric families through `shared.metrics`, on a registry of its own per app, so several
replicas can live in one process (the tests run two).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from services.gateway.fanout import FanOutStats
from services.gateway.hub import Hub
from services.gateway.protocol import ERROR_CODES
from shared.metrics import counter, gauge, histogram, labelled_counter, labelled_gauge

__all__ = ["HubCollector"]

PREFIX: Final = "tickstream_gateway_"
HANDSHAKE_REFUSALS: Final = ("origin", "unauthorized", "path", "handshake", "draining")


class HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        fanouts = (hub.fanout, hub.upstox)  # both wires: our JSON and Upstox's protocol
        fan = FanOutStats(
            **{f.name: sum(getattr(x.stats, f.name) for x in fanouts) for f in fields(FanOutStats)}
        )
        stats = hub.stats
        channels = sum(len(x.channels) for x in fanouts)
        subscriptions = sum(x.subscription_count for x in fanouts)
        gauges: tuple[tuple[str, str, float], ...] = (
            ("clients", "Connected WebSocket clients", len(hub.clients)),
            ("channels", "Redis tick channels subscribed", channels),
            ("subscriptions", "Client subscriptions (client x key)", subscriptions),
            ("redis_up", "1 when the Redis link is up", 1 if hub.redis_up else 0),
            ("draining", "1 once the replica drains before stopping", int(hub.drain.active)),
        )
        counters: tuple[tuple[str, str, float], ...] = (
            ("connections", "WebSocket connections accepted", stats.connections),
            ("ticks_received", "Tick messages received from Redis", fan.messages),
            ("feed_frames", "live_feed and initial_feed frames sent", fan.frames),
            ("feed_bytes", "Bytes of feed frames sent", fan.bytes),
            ("control_frames", "Control frames sent (ack, error, status...)", stats.control_frames),
            ("control_bytes", "Bytes of control frames sent", stats.control_bytes),
            ("updates_delivered", "Instrument updates written to clients", fan.delivered),
            (
                "updates_conflated",
                "Updates superseded by a newer one while their client was behind",
                fan.conflated,
            ),
            (
                "first_value_waits",
                "Subscribed keys with no value yet whose initial_feed waited for the first",
                fan.first_value_waits,
            ),
            (
                "first_value_misses",
                "Of those, keys still without a value when the wait ended",
                fan.first_value_misses,
            ),
            ("slow_clients_dropped", "Clients closed as slow consumers", stats.slow_dropped),
            ("idle_clients_dropped", "Clients closed after the idle timeout", stats.idle_dropped),
            ("oversize_closed", "Clients closed for an oversized frame", stats.oversize_closed),
            (
                "clients_drained",
                "Clients told to reconnect (1012) by the drain before a stop",
                hub.drain.drained,
            ),
            ("redis_reconnects", "Redis link (re)establishments", stats.redis_reconnects),
            (
                "pubsub_probes_failed",
                "Pub/sub liveness probes unanswered in time (each rebuilt the connection)",
                hub.broker.probes_failed,
            ),
            ("demand_writes", "Demand hash writes", hub.demand.writes),
        )
        for name, doc, value in gauges:
            yield gauge(PREFIX + name, doc, value)
        for name, doc, value in counters:
            yield counter(PREFIX + name, doc, value)
        yield labelled_counter(
            PREFIX + "client_errors",
            "Error frames sent to clients, by code",
            "code",
            stats.errors,
            ERROR_CODES,
        )
        # One pub/sub connection per Redis (each master, on a cluster), by node address.
        nodes = hub.broker.nodes()
        yield labelled_gauge(
            PREFIX + "redis_node_up",
            "1 when the pub/sub connection to this Redis node is served and resynced",
            "node",
            {node.label: 1 if node.up else 0 for node in nodes},
            (),
        )
        yield labelled_counter(
            PREFIX + "redis_node_connects",
            "Pub/sub connections to this Redis node established and resynced",
            "node",
            {node.label: node.connects for node in nodes},
            (),
        )
        yield histogram(
            PREFIX + "tick_lag_seconds",
            "Upstream frame time to arrival here (1 in 16 ticks)",
            hub.tick_lag,
        )
        yield histogram(
            PREFIX + "flush_seconds", "Duration of one flush pass (all due frames)", hub.flush_time
        )
        yield labelled_counter(
            PREFIX + "handshakes_refused",
            "WebSocket handshakes refused, by reason",
            "reason",
            stats.rejected,
            HANDSHAKE_REFUSALS,
        )
