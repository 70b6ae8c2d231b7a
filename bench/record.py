"""`python -m bench.record`: what recording costs and what querying a recorded day costs.

Builds a synthetic but lifelike market day (`bench.frames.build_feed`: N instruments in several
modes, each frame carrying a random part of them, from 09:15 to 15:30 IST at a given frame rate),
then records it as the recorder does, in batches: decode each frame, derive its rows
(`TickRows`), build the frames table and write both tables (`write_table`, zstd, fsync). It
measures:

- the recording rate: feeds per CPU-second of that per-frame work (the recorder's own cost;
  reading the stream from Redis is not included),
- the same end to end (`--stream N`, default 20,000 frames): the real recorder process
  (`tickstream recorder`) on a fresh redis-server, the first N frames appended to its record
  stream as the ingestor appends them (as fast as this process can): its CPU time (from /proc,
  start-up excluded) and wall time until every frame is on disk, so the consumer group's reads
  and acknowledgements are included,
- bytes per tick on disk, of the ticks table and of the frames table,
- a one-key one-day `ticks` query and a one-minute-candle query over that day (`query.py`),
  median wall time of several runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import redis

from bench.fanout import process, tickstream, usage, wait_http
from bench.frames import FrameKind, build_feed, instrument_key
from services.recorder import query
from shared import redis_contract as rc
from shared.ist import IST
from shared.ports import free_port
from shared.proto import pb
from shared.recording import (
    FRAMES,
    TICKS,
    StreamFrame,
    TickRows,
    day_dir,
    day_of,
    file_stem,
    frames_table,
    write_table,
)

T = TypeVar("T")

DAY = dt.date(2026, 12, 4)
OPEN = dt.datetime.combine(DAY, dt.time(9, 15), IST)
CLOSE = dt.datetime.combine(DAY, dt.time(15, 30), IST)
KINDS = (FrameKind.FULL_EQUITY, FrameKind.FULL_OPTION, FrameKind.OPTION_GREEKS, FrameKind.LTPC)


def synthetic_day(
    keys: int, rate: float, per_frame: int, hours: float, seed: int
) -> list[StreamFrame]:
    """Frames of `hours` of trading from 09:15 IST, `rate` a second, each with `per_frame` of
    the `keys` instruments (kinds in turn), as the record stream would hand them over."""
    rng = random.Random(seed)
    instruments = [
        (KINDS[n % len(KINDS)], instrument_key(KINDS[n % len(KINDS)], n)) for n in range(keys)
    ]
    start_ms = int(OPEN.timestamp() * 1000)
    count = int(hours * 3600 * rate)
    frames = []
    for number in range(count):
        received = start_ms + int(number * 1000 / rate)
        frame = pb.FeedResponse(type=pb.live_feed, currentTs=received)
        for kind, key in rng.sample(instruments, min(per_frame, keys)):
            frame.feeds[key].CopyFrom(build_feed(kind, rng, received - rng.randrange(0, 200)))
        frames.append(
            StreamFrame(
                f"{received}-{number}", received, "bench", number, frame.SerializeToString()
            )
        )
    return frames


def record(frames: list[StreamFrame], root: Path, batch: int) -> tuple[float, int]:
    """Record `frames` under `root` in batches of `batch`; (CPU seconds, tick rows)."""
    rows = TickRows()
    ticks = 0
    started = time.process_time()
    for first in range(0, len(frames), batch):
        chunk = frames[first : first + batch]
        current = []
        for entry in chunk:
            frame = pb.FeedResponse.FromString(entry.data)
            current.append(frame.currentTs)
            rows.add(frame, entry.stream_id)
        stem = file_stem(chunk[0].stream_id, chunk[-1].stream_id) + ".parquet"
        day = day_of(chunk[0].received_ms)
        table = rows.take()
        ticks += table.num_rows
        write_table(day_dir(root, FRAMES, day) / stem, frames_table(chunk, current))
        write_table(day_dir(root, TICKS, day) / stem, table)
    return time.process_time() - started, ticks


def record_from_stream(frames: list[StreamFrame], root: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, feeds) of the recorder process taking `frames` from the
    record stream of its own redis-server into `root`."""
    from tests.support.redis_server import LocalRedisServer

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench.record --stream needs redis-server on PATH")
    server = LocalRedisServer(binary)
    server.start()
    try:
        feeds = sum(len(pb.FeedResponse.FromString(f.data).feeds) for f in frames)
        port = free_port()
        env = {"REDIS_URL": server.url, "RECORDER_DIR": str(root), "LOG_LEVEL": "WARNING"}
        with process(tickstream("recorder", "--port", str(port)), env, "recorder") as proc:
            status = f"http://127.0.0.1:{port}/status"
            wait_http(status, 120)
            cpu = usage(proc.pid).cpu_seconds  # start-up (imports) not counted
            started = time.perf_counter()
            append(server.url, frames)
            while httpx.get(status, timeout=5).json()["frames_recorded"] < len(frames):
                time.sleep(0.05)
            wall = time.perf_counter() - started
            cpu = usage(proc.pid).cpu_seconds - cpu
        return cpu, wall, feeds
    finally:
        server.cleanup()


def append(url: str, frames: list[StreamFrame]) -> None:
    """`frames` into the record stream as the ingestor appends them, pipelined."""
    client = redis.Redis.from_url(url)
    data, received, instance, counter = rc.RECORD_FIELDS
    for start in range(0, len(frames), 1000):
        pipe = client.pipeline(transaction=False)
        for frame in frames[start : start + 1000]:
            fields: dict[bytes, bytes | int | str] = {
                data: frame.data,
                received: frame.received_ms,
                instance: "bench",
                counter: frame.seq,
            }
            pipe.xadd(rc.RECORD_STREAM, fields)  # type: ignore[arg-type]
        pipe.execute()
    client.close()


def size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*.parquet"))


def median_seconds(action: Callable[[], T], runs: int) -> tuple[float, T]:
    times = []
    result = action()  # a warm-up run, not timed
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.record", description=__doc__)
    parser.add_argument("--keys", type=int, default=40, help="instruments (40)")
    parser.add_argument("--rate", type=float, default=4.0, help="frames a second (4)")
    parser.add_argument("--per-frame", type=int, default=10, help="instruments a frame (10)")
    parser.add_argument("--hours", type=float, default=6.25, help="hours from 09:15 (6.25)")
    parser.add_argument("--batch", type=int, default=2000, help="frames a file (2000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each query (5)")
    parser.add_argument("--dir", type=Path, help="keep the recording here (a temporary dir)")
    parser.add_argument(
        "--stream", type=int, default=20_000, help="frames the recorder process takes (0: skip)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    frames = synthetic_day(args.keys, args.rate, args.per_frame, args.hours, seed=1)
    feeds = sum(len(pb.FeedResponse.FromString(f.data).feeds) for f in frames[:100])
    sys.stdout.write(
        f"built {len(frames):,} frames ({args.keys} keys, ~{feeds / min(100, len(frames)):.0f}"
        f" a frame) in {time.perf_counter() - started:.1f}s\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-record-") as scratch:
        root = args.dir or Path(scratch)
        cpu, ticks = record(frames, root, args.batch)
        key = instrument_key(KINDS[0], 0)
        day = (OPEN - dt.timedelta(hours=9, minutes=15), CLOSE + dt.timedelta(hours=8, minutes=30))
        tick_time, found = median_seconds(lambda: query.ticks(root, key, *day), args.runs)
        candle_time, candles = median_seconds(
            lambda: query.candles(root, key, "1m", *day), args.runs
        )
        rows = [
            ("frames recorded", f"{len(frames):,}"),
            ("ticks (feeds) recorded", f"{ticks:,}"),
            ("recording rate (feeds per CPU-second)", f"{ticks / cpu:,.0f}"),
            ("ticks table, bytes per tick", f"{size_of(root / TICKS) / ticks:.1f}"),
            ("frames table, bytes per tick", f"{size_of(root / FRAMES) / ticks:.1f}"),
            (f"one-key one-day ticks query ({len(found):,} ticks)", f"{tick_time * 1000:.1f} ms"),
            (
                f"one-minute candles of that day ({len(candles):,} candles)",
                f"{candle_time * 1000:.1f} ms",
            ),
        ]
    if args.stream:
        with tempfile.TemporaryDirectory(prefix="bench-record-stream-") as scratch:
            cpu, wall, feeds = record_from_stream(frames[: args.stream], Path(scratch))
        rows += [
            (
                f"recorder process from the stream ({min(args.stream, len(frames)):,} frames):"
                " feeds per CPU-second",
                f"{feeds / cpu:,.0f}",
            ),
            ("  the same, feeds/s (wall)", f"{feeds / wall:,.0f}"),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        sys.stdout.write(f"{name.ljust(width)}  {value:>12}\n")


if __name__ == "__main__":
    main()
