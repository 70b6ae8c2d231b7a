"""Timing on the hot path: the histogram bounds of the gateway's lag and flush metrics, and a
tick's own timestamp read without parsing its JSON."""

from __future__ import annotations

from typing import Final

from shared.metrics import Buckets

__all__ = ["FLUSH_BUCKETS", "LAG_BUCKETS", "Buckets", "tick_ts_ms"]

LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


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
