"""Cheap histograms for the hot path: plain counters per bucket, read by the metrics collector."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


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


def tick_ts_ms(payload: bytes) -> int | None:
    """The `ts` of a tick payload's metadata (the upstream frame's time), without parsing JSON:
    the metadata is the last part of the payload and `ts` its last field."""
    at = payload.rfind(b'"ts":')
    if at < 0:
        return None
    try:
        return int(payload[at + 5 : -1])
    except ValueError:
        return None
