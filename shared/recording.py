"""The recording's contract: what the ingestor appends to the record stream, and the files the
recorder writes from it, which queries and the simulator's replay read. No I/O but `write_table`.

The stream carries raw frames, not per-instrument ticks: a frame is what Upstox sent, so a
replay serves exactly what arrived (partial ticks, market_info, the order of instruments in a
frame), and the ingestor appends bytes it already holds, with no per-instrument work on the hot
path. The recorder derives the per-instrument rows once, off the live path.

Layout under the recording's root directory:

    frames/day=YYYY-MM-DD/<first>_<last>.parquet   one row per frame (`FRAMES_SCHEMA`)
    ticks/day=YYYY-MM-DD/<first>_<last>.parquet    one row per instrument per frame (`TICKS_SCHEMA`)

    gaps.jsonl                                     one JSON object per gap found (`GAPS`)

`day` is the IST calendar day of the frame's receipt; `<first>` and `<last>` are the stream ids
of the file's first and last frame (`file_stem`, zero-padded so that names sort in stream
order). A file appears whole or not at all (`write_table`: a temporary name, fsync, rename,
fsync of the directory). Rows of one file are in stream order; files of a day sort by name.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from shared.ist import IST
from shared.proto import pb
from shared.render import feed_mode

FRAMES: Final = "frames"
TICKS: Final = "ticks"
# Frames missing from the recording, a line each: the instance whose counter jumped, the
# counters around the jump (`from_n`, `to_n`), `missing`, and the received times and stream ids
# of the frames around it (`before_received_ms`, `after_received_ms`, `before_id`, `after_id`).
GAPS: Final = "gaps.jsonl"

FRAMES_SCHEMA: Final = pa.schema(
    [
        ("stream_id", pa.string()),  # the record stream's id, "<ms>-<seq>"
        ("received", pa.timestamp("ms", tz="UTC")),  # when the ingestor received the frame
        ("current_ts", pa.int64()),  # the frame's own currentTs (ms), 0 when absent
        ("instance", pa.string()),  # the ingestor instance that received it
        ("seq", pa.int64()),  # that instance's frame counter: a jump is a gap
        ("data", pa.binary()),  # the FeedResponse bytes, as they came
    ]
)

TICKS_SCHEMA: Final = pa.schema(
    [
        ("key", pa.string()),  # instrument key
        ("ts", pa.timestamp("ms", tz="UTC")),  # last trade time (ltt), else the frame's time
        ("ltp", pa.float64()),
        ("ltq", pa.int64()),
        ("cp", pa.float64()),  # previous close
        ("volume", pa.int64()),  # volume traded today (vtt); null in ltpc mode
        ("oi", pa.float64()),  # open interest; null where the mode has none
        ("bid", pa.float64()),  # best bid and ask (level 1), null without depth
        ("bid_qty", pa.int64()),
        ("ask", pa.float64()),
        ("ask_qty", pa.int64()),
        ("mode", pa.string()),  # the mode it arrived in
        ("stream_id", pa.string()),  # of its frame
    ]
)


class StreamFrame(NamedTuple):
    """One record stream entry, decoded (`redis_contract.RECORD_FIELDS`)."""

    stream_id: str
    received_ms: int
    instance: str
    seq: int
    data: bytes


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as numbers, to compare ("1700000000000-3" -> (1700000000000, 3))."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def file_stem(first: str, last: str) -> str:
    """`<first>_<last>` with each id zero-padded ("0001700000000000-00000003"), so names sort."""

    def padded(stream_id: str) -> str:
        ms, seq = stream_id_key(stream_id)
        return f"{ms:016d}-{seq:08d}"

    return f"{padded(first)}_{padded(last)}"


def stem_range(stem: str) -> tuple[str, str]:
    """Inverse of `file_stem`: (first, last) stream ids."""
    first, _, last = stem.partition("_")

    def plain(padded: str) -> str:
        ms, _, seq = padded.partition("-")
        return f"{int(ms)}-{int(seq)}"

    return plain(first), plain(last)


def day_of(received_ms: int) -> str:
    """The IST day a frame received at `received_ms` belongs to ("2026-12-06")."""
    return dt.datetime.fromtimestamp(received_ms / 1000, IST).date().isoformat()


def day_dir(root: Path, table: str, day: str) -> Path:
    return root / table / f"day={day}"


def table_glob(root: Path | str, table: str) -> str:
    """A glob over every file of `table`, for DuckDB's `read_parquet(..., hive_partitioning)`."""
    return f"{str(root).rstrip('/')}/{table}/day=*/*.parquet"


def write_table(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically and durably (see the module docstring). Raises
    `OSError` (disk full, read-only, permissions) with nothing left at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, temporary, compression="zstd")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def frames_table(frames: Iterable[StreamFrame], current_ts: Iterable[int]) -> pa.Table:
    frames = list(frames)
    return pa.Table.from_pydict(
        {
            "stream_id": [f.stream_id for f in frames],
            "received": [f.received_ms for f in frames],
            "current_ts": list(current_ts),
            "instance": [f.instance for f in frames],
            "seq": [f.seq for f in frames],
            "data": [f.data for f in frames],
        },
        schema=FRAMES_SCHEMA,
    )


class TickRows:
    """Per-instrument rows of successive frames, whole: a partial feed (Upstox leaves out parts
    that did not change) takes the parts it lacks from the key's previous row. The memory of
    previous rows starts empty, so the first partial feed of a key after a restart has nulls
    where its parts were left out."""

    def __init__(self) -> None:
        self._last: dict[str, dict[str, Any]] = {}
        self.columns: dict[str, list[Any]] = {name: [] for name in TICKS_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.columns["key"])

    def add(self, frame: pb.FeedResponse, stream_id: str) -> None:
        if frame.type == pb.market_info:
            return
        for key, feed in frame.feeds.items():
            row = self._row(key, feed, frame.currentTs)
            if row is None:
                continue
            row["stream_id"] = stream_id
            for name, column in self.columns.items():
                column.append(row.get(name))

    def take(self) -> pa.Table:
        """The rows added so far, as a table; the memory of previous rows stays."""
        table = pa.Table.from_pydict(self.columns, schema=TICKS_SCHEMA)
        self.columns = {name: [] for name in TICKS_SCHEMA.names}
        return table

    def _row(self, key: str, feed: pb.Feed, current_ts: int) -> dict[str, Any] | None:
        mode = feed_mode(feed)
        if mode is None:
            return None
        previous = self._last.get(key, {})
        row: dict[str, Any] = {"key": key, "mode": mode.value}
        for name, value in _fields(feed):
            row[name] = value
        for name in ("ltp", "ltq", "cp", "bid", "bid_qty", "ask", "ask_qty", "oi", "volume"):
            if name not in row and name in previous:
                row[name] = previous[name]
        row["ts"] = row.pop("ltt", None) or current_ts or None
        self._last[key] = row
        return dict(row)


def _fields(feed: pb.Feed) -> Iterator[tuple[str, Any]]:
    """(column, value) of the parts `feed` carries; parts it leaves out yield nothing."""
    branch = feed.WhichOneof("FeedUnion")
    if branch == "ltpc":
        yield from _ltpc(feed.ltpc)
        return
    if branch == "firstLevelWithGreeks":
        first = feed.firstLevelWithGreeks
        if first.HasField("ltpc"):
            yield from _ltpc(first.ltpc)
        if first.HasField("firstDepth"):
            yield from _quote(first.firstDepth)
        yield "volume", first.vtt
        yield "oi", first.oi
        return
    full = feed.fullFeed
    if full.HasField("indexFF"):
        if full.indexFF.HasField("ltpc"):
            yield from _ltpc(full.indexFF.ltpc)
        return
    market = full.marketFF
    if market.HasField("ltpc"):
        yield from _ltpc(market.ltpc)
    if market.HasField("marketLevel") and market.marketLevel.bidAskQuote:
        yield from _quote(market.marketLevel.bidAskQuote[0])
    yield "volume", market.vtt
    yield "oi", market.oi


def _ltpc(ltpc: pb.LTPC) -> Iterator[tuple[str, Any]]:
    yield "ltp", ltpc.ltp
    yield "ltq", ltpc.ltq
    yield "cp", ltpc.cp
    if ltpc.ltt:
        yield "ltt", ltpc.ltt


def _quote(quote: pb.Quote) -> Iterator[tuple[str, Any]]:
    yield "bid", quote.bidP
    yield "bid_qty", quote.bidQ
    yield "ask", quote.askP
    yield "ask_qty", quote.askQ
