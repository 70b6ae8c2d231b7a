"""The recording's durability rules with a real Redis and real files: acknowledged only once on
disk, no duplicates after a crash between write and ack, compaction and retention that keep
every row once, and a disk error that holds everything back until the disk is writable."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import redis.asyncio as aioredis

from services.recorder.service import decode_entry
from services.recorder.store import FileInfo, Store, expired_days, plan_compaction
from shared import redis_contract as rc
from shared.recording import FRAMES, TICKS, StreamFrame, day_dir, day_of, file_stem
from tests.recorder.conftest import (
    RecorderFactory,
    add_frame,
    feed_bytes,
    pending,
    recorded_ids,
)
from tests.support.waiting import eventually


async def test_nothing_is_acknowledged_before_it_is_on_disk(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    recorder = await run_recorder(recorder_flush_seconds=3600, recorder_flush_frames=5)
    ids = [await add_frame(redis_client, "ing-a", n) for n in range(1, 5)]
    await eventually(lambda: len(recorder.buffer) == 4, "four frames read")
    assert await pending(redis_client) == 4
    assert recorded_ids(root) == []
    ids.append(await add_frame(redis_client, "ing-a", 5))  # the fifth fills a batch

    async def acked() -> bool:
        return await pending(redis_client) == 0

    await eventually(acked, "the batch acknowledged")
    assert recorded_ids(root) == ids
    assert recorded_ids(root, TICKS) == ids


async def test_entries_on_disk_but_not_acked_are_not_written_twice(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    await redis_client.xgroup_create(rc.RECORD_STREAM, rc.RECORD_GROUP, id="0", mkstream=True)
    ids = [await add_frame(redis_client, "ing-a", n) for n in range(1, 7)]
    # A recorder that crashed after writing the first four and before acknowledging them
    # (and after writing the ticks, not the frames, of the next two).
    reply: Any = await redis_client.xreadgroup(
        rc.RECORD_GROUP, "recorder-1", {rc.RECORD_STREAM: ">"}, count=6
    )
    frames = [decode_entry(i.decode(), fields) for i, fields in reply[0][1]]
    Store(root).write(frames[:4])
    orphan = Store(root)
    orphan.write(frames[4:])
    for path in (root / FRAMES).glob("day=*/*.parquet"):
        if path.stem == file_stem(ids[4], ids[5]):
            path.unlink()
    assert await pending(redis_client) == 6

    recorder = await run_recorder()
    ids.append(await add_frame(redis_client, "ing-a", 7))

    async def acked() -> bool:
        return await pending(redis_client) == 0

    await eventually(lambda: recorded_ids(root) == ids, "every frame once, in order")
    await eventually(acked, "everything acknowledged")
    assert recorded_ids(root, TICKS) == ids  # the orphan ticks file was replaced, not doubled
    assert recorder.frames_recorded == 3
    assert recorder.gaps == 0  # continued from the last frame on disk


def _frames(count: int, start_ms: int, instance: str = "ing-a") -> list[StreamFrame]:
    return [
        StreamFrame(f"{start_ms + n}-0", start_ms + n, instance, n + 1, feed_bytes(100.0 + n))
        for n in range(count)
    ]


def test_compaction_keeps_every_row_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    frames = _frames(40, int(time.time() * 1000))
    for start in range(0, 40, 4):
        store.write(frames[start : start + 4])
    day = day_of(frames[0].received_ms)
    assert store.file_count(day) == 10
    assert store.compact(day, limit=10) == 0  # not above the limit: left alone
    expected = [frame.stream_id for frame in frames]
    store.compact(day, limit=3)
    assert store.file_count(day) == 1
    assert recorded_ids(tmp_path) == expected
    assert recorded_ids(tmp_path, TICKS) == expected
    merged = next(day_dir(tmp_path, FRAMES, day).glob("*.parquet"))
    assert merged.stem == file_stem(frames[0].stream_id, frames[-1].stream_id)
    assert pq.ParquetFile(merged).schema_arrow.names[0] == "stream_id"


def test_compaction_cut_short_leaves_no_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path)
    frames = _frames(12, int(time.time() * 1000))
    for start in range(0, 12, 4):
        store.write(frames[start : start + 4])
    day = day_of(frames[0].received_ms)
    directory = day_dir(tmp_path, FRAMES, day)
    original = sorted(directory.glob("*.parquet"))[0]
    copy = tmp_path / "copy.parquet"
    shutil.copy(original, copy)
    store.compact(day, limit=2)
    shutil.copy(copy, original)  # as if the crash came before the originals were deleted
    store.compact(day, limit=2)
    assert recorded_ids(tmp_path) == [frame.stream_id for frame in frames]


def test_compaction_plan_merges_runs_of_small_files_only() -> None:
    big = 64 << 20
    files = [
        FileInfo(file_stem("1-0", "1-9"), 10),
        FileInfo(file_stem("2-0", "2-9"), 10),
        FileInfo(file_stem("3-0", "3-9"), big),
        FileInfo(file_stem("4-0", "4-9"), 10),
        FileInfo(file_stem("5-0", "5-9"), 10),
        FileInfo(file_stem("5-2", "5-3"), 10),  # inside the one before: a leftover
    ]
    covered, runs = plan_compaction(files, limit=3)
    assert covered == [file_stem("5-2", "5-3")]
    assert runs == [
        [file_stem("1-0", "1-9"), file_stem("2-0", "2-9")],
        [file_stem("4-0", "4-9"), file_stem("5-0", "5-9")],
    ]


def test_retention_removes_old_days_only(tmp_path: Path) -> None:
    assert expired_days(["2026-01-01", "2026-01-10"], "2026-01-11", 0) == []
    assert expired_days(["2026-01-01", "2026-01-10"], "2026-01-11", 5) == ["2026-01-01"]
    for day in ("2026-10-01", "2026-11-30", "2026-12-05"):
        for table in (FRAMES, TICKS):
            directory = day_dir(tmp_path, table, day)
            directory.mkdir(parents=True)
            (directory / "x.parquet").write_bytes(b"")
    assert Store(tmp_path).apply_retention("2026-12-06", 30) == ["2026-10-01"]
    assert Store(tmp_path).days() == ["2026-11-30", "2026-12-05"]


async def test_disk_error_holds_everything_until_the_disk_is_back(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory, tmp_path: Path
) -> None:
    # A regular file where a directory must be: mkdir fails even for root (chmod would not).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    root = blocker / "rec"
    recorder = await run_recorder(root=root, recorder_max_buffer_frames=3)
    ids = [await add_frame(redis_client, "ing-a", n) for n in range(1, 6)]
    await eventually(lambda: recorder.state == "disk_error", "disk_error")
    await eventually(lambda: recorder.write_errors >= 2, "retried")
    status = recorder.status()
    assert "NotADirectoryError" in status.detail or "FileExistsError" in status.detail
    assert len(recorder.buffer) == 3  # bounded: the rest stays in Redis, undelivered
    assert await pending(redis_client) == 3
    assert recorder.frames_recorded == 0

    blocker.unlink()  # the cause goes away

    async def acked() -> bool:
        return await pending(redis_client) == 0

    await eventually(lambda: recorded_ids(root) == ids, "every frame once, in order")
    await eventually(acked, "everything acknowledged")
    await eventually(lambda: recorder.state == "recording", "recording again")
    assert recorder.gaps == 0
