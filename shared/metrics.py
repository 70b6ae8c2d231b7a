"""Prometheus exposition from plain counters: the one metrics style of every service.

Components count with plain ints, `collections.Counter`s and `Buckets` (no locks, no label
lookups, nothing from prometheus_client on a hot path); each service's `metrics` module is a
`Collector` that reads them at scrape time through the builders here, on a registry of its own
per app, so tests can run several apps in one process. This module owns the exposition
vocabulary only: it knows no service and no metric name.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

__all__ = [
    "Buckets",
    "counter",
    "gauge",
    "histogram",
    "labelled_counter",
    "labelled_gauge",
    "metrics_response",
    "registry_for",
]


class Buckets:
    """A Prometheus-style histogram (upper bounds in seconds) without locks or labels."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, cumulative count) pairs, ending with +Inf."""
        running = 0
        found: list[tuple[str, float]] = []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            found.append((bound, float(running)))
        return found


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def labelled_counter(
    name: str, doc: str, label: str, values: Mapping[str, float], known: Iterable[str]
) -> CounterMetricFamily:
    """One sample per label value: every `known` one (zeros included, so dashboards see the
    series before the first event), then any other value that was counted."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in _samples(values, known):
        family.add_metric([value], count)
    return family


def labelled_gauge(
    name: str, doc: str, label: str, values: Mapping[str, float], known: Iterable[str]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value, count in _samples(values, known):
        family.add_metric([value], count)
    return family


def histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=buckets.cumulative(), sum_value=buckets.total)


def registry_for(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own holding `collectors` (no process-wide default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    """The body of a service's `/metrics`: the registry in Prometheus' text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _samples(values: Mapping[str, float], known: Iterable[str]) -> list[tuple[str, float]]:
    names = list(dict.fromkeys([*known, *values]))
    return [(name, float(values.get(name, 0))) for name in names]
