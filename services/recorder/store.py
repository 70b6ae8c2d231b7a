"""The recording on disk: what the recorder writes, where, and what it may delete.

Planning is pure (`group_by_day`, `newest_id`, `plan_compaction`, `expired_days`); `Store` is the
thin, blocking I/O shell around it (the service runs it in a thread). Order of writes, so that a
crash at any point loses nothing and duplicates nothing once the stream is re-read:

- a batch's ticks files are written before its frames files: a frames file on disk means its
  ticks are there too. At start, the newest frames id on disk is the high-water mark (entries at
  or below it are acknowledged without being written again) and any ticks file beyond it is an
  orphan of a crash, deleted before its frames are written again;
- gaps found in a batch are appended to `gaps.jsonl` (fsynced) before its files, and a gap
  already in the file is not appended twice, so a gap is never lost and never doubled.

Compaction merges consecutive runs of small files of one day into one file named by the run's
first and last stream id, written (atomically, durably) before the originals are deleted. A
reader may briefly see both the merged file and its originals: readers that must not count a
frame twice DISTINCT on `stream_id` (ticks: on `stream_id` and `key`). A crash between the two
steps leaves originals inside a merged file's range; the next compaction deletes them first.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from services.recorder.gaps import Gap
from shared.proto import pb
from shared.recording import (
    FRAMES,
    GAPS,
    TICKS,
    StreamFrame,
    TickRows,
    day_dir,
    day_of,
    file_stem,
    frames_table,
    stem_range,
    stream_id_key,
    write_table,
)

__all__ = [
    "SMALL_FILE_BYTES",
    "Store",
    "Written",
    "expired_days",
    "group_by_day",
    "newest_id",
    "plan_compaction",
]

logger = logging.getLogger(__name__)


SMALL_FILE_BYTES = 16 << 20  # files below this are merged by compaction
MERGED_MAX_BYTES = 128 << 20  # a merged file stops growing past this


class Written(NamedTuple):
    frames: int
    ticks: int
    bytes: int


class FileInfo(NamedTuple):
    name: str  # the file's stem
    size: int


# ---- pure planning -------------------------------------------------------------------------


def group_by_day(frames: Iterable[StreamFrame]) -> dict[str, list[StreamFrame]]:
    """Frames by the IST day of their receipt, each list in stream order."""
    days: dict[str, list[StreamFrame]] = {}
    for frame in frames:
        days.setdefault(day_of(frame.received_ms), []).append(frame)
    return days


def newest_id(stems: Iterable[str]) -> str | None:
    """The newest stream id any of the file stems covers."""
    lasts = [stem_range(stem)[1] for stem in stems]
    return max(lasts, key=stream_id_key, default=None)


def _key_range(stem: str) -> tuple[tuple[int, int], tuple[int, int]]:
    first, last = stem_range(stem)
    return stream_id_key(first), stream_id_key(last)


def plan_compaction(files: Sequence[FileInfo], limit: int) -> tuple[list[str], list[list[str]]]:
    """(files to delete at once, runs of files to merge) for one day directory.

    Files inside another file's range are leftovers of a compaction cut short: deleted. The
    rest, when more than `limit`, are merged in runs of consecutive small files."""
    ordered = sorted(files, key=lambda f: _key_range(f.name))
    covered: list[str] = []
    kept: list[FileInfo] = []
    for info in ordered:
        first, last = _key_range(info.name)
        if any(
            other is not info
            and _key_range(other.name)[0] <= first
            and last <= _key_range(other.name)[1]
            and _key_range(other.name) != (first, last)
            for other in ordered
        ):
            covered.append(info.name)
        else:
            kept.append(info)
    if len(kept) <= limit:
        return covered, []
    runs: list[list[str]] = []
    run: list[str] = []
    run_bytes = 0
    for info in kept:
        if info.size >= SMALL_FILE_BYTES or run_bytes + info.size > MERGED_MAX_BYTES:
            if len(run) > 1:
                runs.append(run)
            run, run_bytes = [], 0
            if info.size >= SMALL_FILE_BYTES:
                continue
        run.append(info.name)
        run_bytes += info.size
    if len(run) > 1:
        runs.append(run)
    return covered, runs


def expired_days(days: Iterable[str], today: str, retention_days: int) -> list[str]:
    """The days (ISO dates) older than `retention_days` before `today`; none when 0."""
    if retention_days <= 0:
        return []
    oldest_kept = (dt.date.fromisoformat(today) - dt.timedelta(days=retention_days)).isoformat()
    return sorted(day for day in days if day < oldest_kept)


# ---- I/O -----------------------------------------------------------------------------------


class Store:
    """The recording's root directory. Blocking; not for the event loop's thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rows = TickRows()

    # -- start

    def recover(self) -> str | None:
        """The newest stream id durably recorded, after deleting orphan ticks files (see the
        module docstring). Raises OSError when the directory cannot be read."""
        newest = newest_id(path.stem for path in self._files(FRAMES))
        for path in self._files(TICKS):
            first, _ = stem_range(path.stem)
            if newest is None or stream_id_key(first) > stream_id_key(newest):
                logger.info("deleting %s: its frames were never written (a crash)", path)
                path.unlink()
        return newest

    def last_frame(self) -> StreamFrame | None:
        """The newest frame on disk (without its data), to continue gap detection."""
        paths = self._files(FRAMES)
        if not paths:
            return None
        newest = max(paths, key=lambda p: stream_id_key(stem_range(p.stem)[1]))
        table = pq.ParquetFile(newest).read(columns=["stream_id", "received", "instance", "seq"])
        if table.num_rows == 0:
            return None
        row = table.slice(table.num_rows - 1).to_pylist()[0]
        received = int(row["received"].timestamp() * 1000)
        return StreamFrame(row["stream_id"], received, row["instance"], row["seq"], b"")

    def recorded_gaps(self) -> set[tuple[str, int, int]]:
        path = self.root / GAPS
        if not path.exists():
            return set()
        found: set[tuple[str, int, int]] = set()
        for line in path.read_text().splitlines():
            if line.strip():
                gap = json.loads(line)
                found.add((gap["instance"], gap["from_n"], gap["to_n"]))
        return found

    # -- writing

    def append_gaps(self, gaps: Sequence[Gap]) -> None:
        if not gaps:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(gap._asdict(), separators=(",", ":")) + "\n" for gap in gaps)
        with open(self.root / GAPS, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def write(self, frames: Sequence[StreamFrame]) -> Written:
        """Write one ticks file then one frames file per day touched. Raises OSError with the
        memory of previous tick rows as it was, so a retry derives the same rows."""
        saved = copy.deepcopy(self._rows)
        try:
            return self._write(frames)
        except BaseException:
            self._rows = saved
            raise

    def _write(self, frames: Sequence[StreamFrame]) -> Written:
        planned: list[tuple[Path, pa.Table, Path, pa.Table]] = []
        for day, batch in group_by_day(frames).items():
            current_ts: list[int] = []
            for frame in batch:
                message = pb.FeedResponse.FromString(frame.data)
                current_ts.append(message.currentTs)
                self._rows.add(message, frame.stream_id)
            name = file_stem(batch[0].stream_id, batch[-1].stream_id) + ".parquet"
            planned.append(
                (
                    day_dir(self.root, TICKS, day) / name,
                    self._rows.take(),
                    day_dir(self.root, FRAMES, day) / name,
                    frames_table(batch, current_ts),
                )
            )
        ticks = size = 0
        for ticks_path, ticks_table, _, _ in planned:
            write_table(ticks_path, ticks_table)
            ticks += ticks_table.num_rows
            size += ticks_path.stat().st_size
        for _, _, frames_path, table in planned:
            write_table(frames_path, table)
            size += frames_path.stat().st_size
        return Written(len(frames), ticks, size)

    # -- housekeeping

    def days(self) -> list[str]:
        found: set[str] = set()
        for table in (FRAMES, TICKS):
            directory = self.root / table
            if directory.is_dir():
                found.update(
                    p.name.removeprefix("day=") for p in directory.glob("day=*") if p.is_dir()
                )
        return sorted(found)

    def apply_retention(self, today: str, retention_days: int) -> list[str]:
        expired = expired_days(self.days(), today, retention_days)
        for day in expired:
            for table in (FRAMES, TICKS):
                directory = day_dir(self.root, table, day)
                if directory.is_dir():
                    shutil.rmtree(directory)
            logger.info("retention: deleted the recording of %s", day)
        return expired

    def compact(self, day: str, limit: int) -> int:
        """Merge small files of `day` (both tables) when there are more than `limit`; the
        number of files removed."""
        removed = 0
        for table in (FRAMES, TICKS):
            directory = day_dir(self.root, table, day)
            if not directory.is_dir():
                continue
            infos = [
                FileInfo(path.stem, path.stat().st_size)
                for path in directory.glob("[0-9]*.parquet")
            ]
            covered, runs = plan_compaction(infos, limit)
            for stem in covered:
                (directory / f"{stem}.parquet").unlink()
                removed += 1
            for run in runs:
                paths = [directory / f"{stem}.parquet" for stem in run]
                merged = pa.concat_tables([pq.ParquetFile(path).read() for path in paths])
                first, _ = stem_range(run[0])
                _, last = stem_range(run[-1])
                write_table(directory / f"{file_stem(first, last)}.parquet", merged)
                for path in paths:
                    path.unlink()
                removed += len(paths) - 1
                logger.info("compacted %d %s files of %s", len(paths), table, day)
        return removed

    def file_count(self, day: str) -> int:
        directory = day_dir(self.root, FRAMES, day)
        return len(list(directory.glob("[0-9]*.parquet"))) if directory.is_dir() else 0

    def _files(self, table: str) -> list[Path]:
        directory = self.root / table
        if not directory.is_dir():
            return []
        return sorted(directory.glob("day=*/[0-9]*.parquet"))
