"""Prometheus metrics of the recorder, read from the service's plain counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.metrics import counter, gauge, labelled_gauge
from shared.redis_contract import RecorderState

if TYPE_CHECKING:
    from services.recorder.service import Recorder

__all__ = ["RecorderCollector"]

PREFIX = "tickstream_recorder_"
STATES: tuple[RecorderState, ...] = get_args(RecorderState)


class RecorderCollector(Collector):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        r = self._recorder
        yield counter(PREFIX + "frames", "Frames durably recorded.", r.frames_recorded)
        yield counter(PREFIX + "ticks", "Tick rows durably recorded.", r.ticks_recorded)
        yield counter(PREFIX + "bytes_written", "Bytes of Parquet files written.", r.bytes_written)
        yield counter(
            PREFIX + "write_errors", "Failed attempts to write the recording.", r.write_errors
        )
        yield counter(PREFIX + "gaps", "Gaps found in an instance's frame counter.", r.gaps)
        yield counter(PREFIX + "gap_frames", "Frames missing in those gaps.", r.gap_frames)
        yield gauge(
            PREFIX + "lag_frames",
            "Stream entries not yet read by the recorder's group (-1: unknown).",
            -1 if r.lag_frames is None else r.lag_frames,
        )
        yield gauge(PREFIX + "buffered_frames", "Frames read, not yet on disk.", len(r.buffer))
        yield labelled_gauge(
            PREFIX + "state", "1 for the state the recorder is in.", "state", {r.state: 1}, STATES
        )
        yield counter(PREFIX + "redis_errors", "Failed Redis operations.", r.link.errors)
