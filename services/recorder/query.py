"""Queries over a recording: the ticks of one instrument in a time range, and candles of any
interval built from them. Pure functions of the files under a recording's root (`shared.recording`
layout), read with DuckDB; the HTTP routes (`api.py`) and `tickstream ticks` share them.

The root is a directory path, or any location DuckDB's `read_parquet` globs (an
`s3://bucket/prefix` root works where the httpfs extension and credentials are configured), so
no query lists files itself: it globs the ticks table and lets hive partitioning prune by `day`.
Each call opens its own in-memory DuckDB connection (cheap, and never shared between threads);
callers on an event loop run it in a thread (`asyncio.to_thread`).

Rows are counted once per (stream_id, key): compaction may briefly leave a frame's rows in two
files. A recording with no files yet answers no rows, not an error.

Candle buckets start at 09:15 IST (the market's open) and every interval after it, per IST day,
so 1m, 5m, 15m, 1h candles line up with Upstox's; a `1d` candle is the IST calendar day. Open and
close are the first and last ltp by (ts, stream order); volume is the growth of the cumulative
day volume (vtt) from the previous bucket's last value (within the bucket, for the first one
asked for), or the sum of ltq where the feed carries no volume (ltpc mode).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Final

import duckdb

from shared.ist import IST
from shared.recording import GAPS, TICKS, table_glob

__all__ = [
    "INTERVAL_FORMS",
    "MAX_INTERVAL_SECONDS",
    "TICK_COLUMNS",
    "Candle",
    "candles",
    "gaps",
    "parse_interval",
    "ticks",
]

MAX_INTERVAL_SECONDS: Final = 86_400
INTERVAL_FORMS: Final = "<n>s (1-86400), <n>m (1-1440), <n>h (1-24) or 1d"
TICK_COLUMNS: Final = (
    "ts",
    "ltp",
    "ltq",
    "volume",
    "oi",
    "bid",
    "bid_qty",
    "ask",
    "ask_qty",
    "cp",
    "mode",
    "stream_id",
)

# [ts ISO 8601 +05:30, open, high, low, close, volume, oi], as Upstox's candles
Candle = list[Any]

_INTERVAL_RE: Final = re.compile(r"^([1-9][0-9]{0,4})([smhd])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_IST_MS: Final = 19_800_000  # IST's offset from UTC
_DAY_MS: Final = 86_400_000
_OPEN_MS: Final = (9 * 60 + 15) * 60_000  # 09:15 IST, after the IST midnight

# The rows of one key in [start, end), each (stream_id, key) once. `day` is the IST day of the
# frame's receipt, at or after the day of its ts (a trade time precedes its receipt), so the
# days to read run from start's day to the day after end's.
_SELECT: Final = """
SELECT DISTINCT ON (stream_id, key)
    epoch_ms(ts) AS ms,
    coalesce(TRY_CAST(split_part(stream_id, '-', 1) AS BIGINT), 0) AS sid_ms,
    coalesce(TRY_CAST(split_part(stream_id, '-', 2) AS BIGINT), 0) AS sid_seq,
    {columns}
FROM read_parquet($glob, hive_partitioning = true, hive_types = {{'day': VARCHAR}})
WHERE day BETWEEN $first_day AND $last_day
    AND key = $key AND ts >= $start AND ts < $end
"""


def parse_interval(text: str) -> int:
    """A candle interval ("5s", "1m", "15m", "1h", "1d") in seconds; `ValueError` naming the
    allowed forms for anything else."""
    match = _INTERVAL_RE.match(text.strip())
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]] if match else 0
    if not match or seconds > MAX_INTERVAL_SECONDS or (match[2] == "d" and seconds != 86_400):
        raise ValueError(f"bad interval {text!r}: expected {INTERVAL_FORMS}")
    return seconds


def ticks(
    root: Path | str, key: str, start: dt.datetime, end: dt.datetime, limit: int | None = None
) -> list[dict[str, Any]]:
    """The recorded ticks of `key` with ts in [start, end) (aware datetimes), in ts order (then
    stream order), at most `limit` of them; ts as ISO 8601 in IST."""
    sql = f"""
        SELECT * FROM ({_select(", ".join(c for c in TICK_COLUMNS if c != "ts"))})
        ORDER BY ms, sid_ms, sid_seq
        {"LIMIT $limit" if limit is not None else ""}
    """
    parameters = _parameters(root, key, start, end)
    if limit is not None:
        parameters["limit"] = limit
    found = _run(sql, parameters)
    names = TICK_COLUMNS[1:]
    return [{"ts": _iso(row[0]), **dict(zip(names, row[3:], strict=True))} for row in found]


def candles(
    root: Path | str, key: str, interval: str, start: dt.datetime, end: dt.datetime
) -> list[Candle]:
    """Candles of `key` from its ticks with ts in [start, end), oldest first (see the module
    docstring for buckets and volume)."""
    step_ms = parse_interval(interval) * 1000
    # The bucket's start, in IST epoch ms, then back to UTC epoch ms.
    if step_ms == _DAY_MS:
        bucket = "ist_day"
    else:
        # Buckets before 09:15 (pre-open, a commodity's early session) count back from 09:15
        # but never cross the IST midnight into the previous day.
        bucket = (
            f"greatest(ist_day, ist_day + {_OPEN_MS}"
            f" + floor((ist_ms - ist_day - {_OPEN_MS}) / {step_ms})::BIGINT * {step_ms})"
        )
    sql = f"""
        WITH t AS ({_select("ltp, ltq, volume, oi")} AND ltp IS NOT NULL),
        d AS (
            SELECT *, ms + {_IST_MS} AS ist_ms,
                (ms + {_IST_MS}) // {_DAY_MS} * {_DAY_MS} AS ist_day
            FROM t
        ),
        b AS (
            SELECT ist_day, {bucket} - {_IST_MS} AS bucket,
                ltp, ltq, volume, oi, (ms, sid_ms, sid_seq) AS seq
            FROM d
        ),
        c AS (
            SELECT bucket, ist_day,
                arg_min(ltp, seq) AS open, max(ltp) AS high, min(ltp) AS low,
                arg_max(ltp, seq) AS close,
                max(volume) AS vmax, min(volume) AS vmin, count(volume) AS vcount,
                sum(ltq) AS traded,
                arg_max(oi, seq) FILTER (WHERE oi IS NOT NULL) AS oi
            FROM b GROUP BY bucket, ist_day
        )
        SELECT bucket, open, high, low, close,
            CASE WHEN vcount > 0 THEN vmax - coalesce(
                lag(vmax) OVER (PARTITION BY ist_day ORDER BY bucket), vmin)
            ELSE coalesce(traded, 0) END AS volume,
            oi
        FROM c ORDER BY bucket
    """
    found = _run(sql, _parameters(root, key, start, end))
    return [
        [_iso(ms), o, h, low, c, max(int(volume), 0), oi if oi is not None else 0]
        for ms, o, h, low, c, volume, oi in found
    ]


def _select(columns: str) -> str:
    return _SELECT.format(columns=columns)


def _parameters(root: Path | str, key: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    first_day = start.astimezone(IST).date()
    last_day = end.astimezone(IST).date() + dt.timedelta(days=1)
    return {
        "glob": table_glob(root, TICKS),
        "first_day": first_day.isoformat(),
        "last_day": last_day.isoformat(),
        "key": key,
        "start": start.astimezone(dt.UTC),
        "end": end.astimezone(dt.UTC),
    }


def _run(sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    connection = duckdb.connect()
    try:
        # Results must not depend on the host's zone (comparisons of TIMESTAMPTZ with
        # parameters, epoch_ms): pin UTC.
        connection.execute("SET TimeZone = 'UTC'")
        return connection.execute(sql, parameters).fetchall()
    except duckdb.IOException as error:
        if "No files found" in str(error):
            return []  # nothing recorded yet
        raise
    finally:
        connection.close()


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, IST).isoformat()


def gaps(root: Path | str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """The gaps the recorder found (`shared.recording.GAPS`) that touch [start, end), oldest
    first, with the received times around each as ISO 8601 in IST. A local root only."""
    path = Path(root) / GAPS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    start_ms, end_ms = start.timestamp() * 1000, end.timestamp() * 1000
    found = []
    for line in lines:
        try:
            gap = json.loads(line)
            before, after = int(gap["before_received_ms"]), int(gap["after_received_ms"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash mid-append
        if after >= start_ms and before < end_ms:
            found.append({**gap, "from": _iso_ms(before), "to": _iso_ms(after)})
    return sorted(found, key=lambda gap: gap["before_received_ms"])


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, IST).isoformat(timespec="milliseconds")
