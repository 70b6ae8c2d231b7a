"""Helpers of the recorder's tests: real FeedResponse frames XADDed into the real record stream,
a recorder run in-process, and the recording read back from its files."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis.asyncio as aioredis

from services.recorder.service import Recorder
from services.recorder.settings import RecorderSettings
from shared import redis_contract as rc
from shared.proto import pb
from shared.recording import FRAMES, TICKS

KEY = "NSE_EQ|INE002A01018"


def feed_bytes(ltp: float, key: str = KEY, current_ts: int | None = None) -> bytes:
    now = current_ts if current_ts is not None else int(time.time() * 1000)
    frame = pb.FeedResponse(
        type=pb.live_feed,
        currentTs=now,
        feeds={key: pb.Feed(ltpc=pb.LTPC(ltp=ltp, ltt=now, ltq=1, cp=100.0))},
    )
    return frame.SerializeToString()


async def add_frame(
    client: aioredis.Redis, instance: str, n: int, received_ms: int | None = None
) -> str:
    """XADD one frame as the ingestor does; its stream id."""
    received = received_ms if received_ms is not None else int(time.time() * 1000)
    data, t, i, seq = rc.RECORD_FIELDS
    fields: dict[Any, Any] = {data: feed_bytes(100.0 + n), t: received, i: instance, seq: n}
    stream_id = await client.xadd(rc.RECORD_STREAM, fields)
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def recorded_ids(root: Path, table: str = FRAMES) -> list[str]:
    """The stream ids of `table`'s rows, in file-name order then row order."""
    ids: list[str] = []
    for path in sorted((root / table).glob("day=*/[0-9]*.parquet")):
        ids.extend(pq.ParquetFile(path).read(columns=["stream_id"]).column(0).to_pylist())
    return ids


def settings_for(redis_url: str, root: Path, **overrides: Any) -> RecorderSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "recorder_dir": root,
        "recorder_flush_seconds": 0.2,
        "recorder_retry_seconds": 0.2,
    }
    values.update(overrides)
    return RecorderSettings(**values)


async def pending(client: aioredis.Redis) -> int:
    info = await client.xpending(rc.RECORD_STREAM, rc.RECORD_GROUP)
    return int(info["pending"])


RecorderFactory = Callable[..., Any]


@pytest.fixture
async def run_recorder(redis_url: str, tmp_path: Path) -> AsyncIterator[RecorderFactory]:
    """`await run_recorder(root=..., **settings)`: a started recorder, stopped at the end."""
    started: list[Recorder] = []

    async def start(root: Path | None = None, **overrides: Any) -> Recorder:
        recorder = Recorder(settings_for(redis_url, root or tmp_path / "rec", **overrides))
        await recorder.start()
        started.append(recorder)
        return recorder

    yield start
    for recorder in started:
        await recorder.stop()


__all__ = ["KEY", "TICKS", "add_frame", "feed_bytes", "pending", "recorded_ids", "settings_for"]
