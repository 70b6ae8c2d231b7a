"""Prometheus metrics of one ingestor instance, read from its components at scrape time.

The components count with plain ints, Counters and `Buckets` (the read loop and the publisher
only bump integers); this collector turns them into metric families through `shared.metrics`.
Each instance has a registry of its own, so tests can run several in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from services.ingestor.failures import REASONS
from services.ingestor.upstream import AUTHORIZE_OUTCOMES
from services.ingestor.watchdog import ACTIONS
from shared.instruments import Mode, count_modes
from shared.metrics import counter, gauge, histogram, labelled_counter, labelled_gauge
from shared.redis_contract import IngestorState

if TYPE_CHECKING:
    from services.ingestor.service import Ingestor

__all__ = ["IngestorCollector"]

PREFIX = "tickstream_ingestor_"
STATES: tuple[IngestorState, ...] = get_args(IngestorState)
MODES = [mode.value for mode in Mode]


class IngestorCollector(Collector):
    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor

    def collect(self) -> Iterator[Metric]:
        ingestor = self._ingestor
        upstream, publisher = ingestor.upstream, ingestor.publisher
        yield counter(PREFIX + "frames", "Frames received from the upstream feed.", upstream.frames)
        yield counter(
            PREFIX + "feeds",
            "Instrument updates received (feeds entries of every frame).",
            upstream.feeds,
        )
        yield counter(
            PREFIX + "published",
            "Tick payloads published to Redis (one per instrument per mode with demand).",
            publisher.published,
        )
        yield counter(
            PREFIX + "decode_errors",
            "Upstream frames skipped because they could not be decoded.",
            upstream.decode_errors,
        )
        yield labelled_gauge(
            PREFIX + "state",
            "1 for the state this instance is in.",
            "state",
            {ingestor.state: 1},
            STATES,
        )
        yield gauge(
            PREFIX + "active", "1 while this instance holds the lease.", int(ingestor.active)
        )
        yield gauge(
            PREFIX + "upstream_connected",
            "1 while the upstream feed connection is open.",
            int(upstream.connected),
        )
        yield counter(
            PREFIX + "upstream_connections",
            "Upstream feed connections opened.",
            upstream.connections,
        )
        yield counter(
            PREFIX + "upstream_reconnects",
            "Upstream connections opened after an earlier one was lost.",
            max(0, upstream.connections - 1),  # every connection but the first
        )
        yield labelled_counter(
            PREFIX + "upstream_failures",
            "Failed or lost upstream connections, by reason.",
            "reason",
            upstream.failures,
            REASONS,
        )
        yield labelled_counter(
            PREFIX + "stalls",
            "Steps of the stall watchdog (the feed silent while data was due), by action: "
            "resubscribe (once per stall), reconnect.",
            "action",
            upstream.stalls,
            ACTIONS,
        )
        yield labelled_counter(
            PREFIX + "authorize_calls",
            "Feed authorize calls, by outcome (ok, auth, error).",
            "outcome",
            upstream.authorize,
            AUTHORIZE_OUTCOMES,
        )
        yield labelled_gauge(
            PREFIX + "subscribed_keys",
            "Keys subscribed upstream, per mode.",
            "mode",
            count_modes(upstream.subscribed.values()),
            MODES,
        )
        yield gauge(
            PREFIX + "refused_keys",
            "Demanded keys (or some of their modes) refused because of a limit.",
            ingestor.demand.refused_keys,
        )
        yield histogram(
            PREFIX + "lag_seconds",
            "Frame time (currentTs) to the moment Redis acknowledged its publication.",
            publisher.lag,
        )
        yield histogram(
            PREFIX + "processing_seconds",
            "Frame received from upstream to Redis acknowledging its publication (our own part "
            "of the lag).",
            publisher.processing,
        )
        yield counter(
            PREFIX + "ticks_shed",
            "Ticks not published because Redis was down or too slow (their latest values are "
            "published again once it recovers).",
            publisher.shed,
        )
        yield counter(PREFIX + "redis_errors", "Failed Redis operations.", ingestor.link.errors)
        framelog = ingestor.framelog
        if framelog is not None:
            yield counter(
                PREFIX + "record_frames",
                "Frames appended to the record stream for the recorder.",
                framelog.appended,
            )
            yield counter(
                PREFIX + "record_dropped",
                "Frames never appended to the record stream (Redis away past the buffer, or "
                "another instance held the lease); the recorder reports them as a gap.",
                framelog.dropped,
            )
            yield gauge(
                PREFIX + "record_backlog",
                "Frames waiting to be appended to the record stream.",
                framelog.backlog,
            )
