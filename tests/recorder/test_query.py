"""Queries over real Parquet files (written with the recording's own writer) and real DuckDB:
ticks in range and in order, duplicates across files once, candles computed by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from services.recorder import query
from shared.ist import IST
from shared.recording import TICKS, TICKS_SCHEMA, day_dir, file_stem, write_table

KEY = "NSE_EQ|INE002A01018"
OTHER = "NSE_EQ|INE467B01029"
DAY = dt.date(2026, 12, 4)
OPEN = dt.datetime(2026, 12, 4, 9, 15, tzinfo=IST)
WHOLE_DAY = (dt.datetime(2026, 12, 4, tzinfo=IST), dt.datetime(2026, 12, 5, tzinfo=IST))


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def tick(at: dt.datetime, ltp: float, seq: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"key": KEY, "ts": ms(at), "ltp": ltp, "ltq": 1, "mode": "full"}
    row.update(fields)
    row["stream_id"] = f"{ms(at)}-{seq}"
    return row


def write(root: Path, rows: list[dict[str, Any]], day: dt.date = DAY) -> Path:
    columns = {name: [row.get(name) for row in rows] for name in TICKS_SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=TICKS_SCHEMA)
    path = day_dir(root, TICKS, day.isoformat()) / (
        file_stem(rows[0]["stream_id"], rows[-1]["stream_id"]) + ".parquet"
    )
    write_table(path, table)
    return path


def at(minutes: float) -> dt.datetime:
    """`minutes` after 09:15 IST on DAY."""
    return OPEN + dt.timedelta(minutes=minutes)


def test_ticks_in_range_in_order_of_one_key_each_row_once(tmp_path: Path) -> None:
    first = [
        tick(at(-1), 99.0, 0),
        tick(at(0), 100.0, 1),
        tick(at(0.5), 101.0, 2, volume=10),
        {**tick(at(0.5), 500.0, 2), "key": OTHER},
    ]
    # The second file repeats the last rows of the first (a compaction in progress), and a
    # row with the same ts as another is ordered by its stream id.
    second = [
        tick(at(0.5), 101.0, 2, volume=10),
        tick(at(0.5), 102.0, 10),
        tick(at(2), 103.0, 11),
    ]
    write(tmp_path, first)
    write(tmp_path, second)

    found = query.ticks(tmp_path, KEY, at(0), at(2))

    assert [(t["ltp"], t["stream_id"]) for t in found] == [
        (100.0, f"{ms(at(0))}-1"),
        (101.0, f"{ms(at(0.5))}-2"),
        (102.0, f"{ms(at(0.5))}-10"),
    ]
    assert found[0]["ts"] == "2026-12-04T09:15:00+05:30"
    assert found[1]["volume"] == 10 and found[0]["volume"] is None
    assert [t["ltp"] for t in query.ticks(tmp_path, KEY, *WHOLE_DAY, limit=2)] == [99.0, 100.0]
    assert [t["ltp"] for t in query.ticks(tmp_path, OTHER, *WHOLE_DAY)] == [500.0]


def test_ticks_read_a_day_after_the_ranges_end(tmp_path: Path) -> None:
    """A frame received after midnight IST lands in the next day's files though its trade
    time is before midnight."""
    late = dt.datetime(2026, 12, 4, 23, 59, 59, tzinfo=IST)
    write(tmp_path, [tick(late, 7.0, 0)], day=dt.date(2026, 12, 5))
    assert [t["ltp"] for t in query.ticks(tmp_path, KEY, *WHOLE_DAY)] == [7.0]


def test_no_recording_is_no_rows(tmp_path: Path) -> None:
    assert query.ticks(tmp_path / "nothing", KEY, *WHOLE_DAY) == []
    assert query.candles(tmp_path, KEY, "1m", *WHOLE_DAY) == []
    write(tmp_path, [tick(at(0), 1.0, 0)])
    assert query.ticks(tmp_path, OTHER, *WHOLE_DAY) == []


def test_one_minute_candles_by_hand(tmp_path: Path) -> None:
    rows = [
        tick(at(-0.5), 98.0, 0, volume=1000, oi=50.0),  # 09:14:30, before the open
        tick(at(0), 100.0, 1, volume=1010, oi=50.0),
        tick(at(0.25), 104.0, 2, volume=1030, oi=51.0),
        tick(at(0.5), 97.0, 3, volume=1040),  # a partial tick: no oi
        tick(at(0.99), 101.0, 4, volume=1050, oi=52.0),
        # Two trades at one ts: the later stream id is the later trade.
        tick(at(1.5), 105.0, 5, volume=1060, oi=53.0),
        tick(at(1.5), 106.0, 6, volume=1070, oi=54.0),
    ]
    write(tmp_path, rows)

    found = query.candles(tmp_path, KEY, "1m", *WHOLE_DAY)

    assert found == [
        ["2026-12-04T09:14:00+05:30", 98.0, 98.0, 98.0, 98.0, 0, 50.0],
        # volume: 1050 at its end less 1000 at the end of the minute before
        ["2026-12-04T09:15:00+05:30", 100.0, 104.0, 97.0, 101.0, 50, 52.0],
        ["2026-12-04T09:16:00+05:30", 105.0, 106.0, 105.0, 106.0, 20, 54.0],
    ]


def test_candles_are_aligned_to_the_open_at_09_15(tmp_path: Path) -> None:
    minutes = (-1, 0, 14, 15, 29, 60, 75)
    write(tmp_path, [tick(at(m), float(m), i) for i, m in enumerate(minutes)])

    fifteen = query.candles(tmp_path, KEY, "15m", *WHOLE_DAY)
    hourly = query.candles(tmp_path, KEY, "1h", *WHOLE_DAY)
    daily = query.candles(tmp_path, KEY, "1d", *WHOLE_DAY)

    assert [(c[0][11:16], c[1], c[4]) for c in fifteen] == [
        ("09:00", -1.0, -1.0),
        ("09:15", 0.0, 14.0),
        ("09:30", 15.0, 29.0),
        ("10:15", 60.0, 60.0),
        ("10:30", 75.0, 75.0),
    ]
    assert [c[0][11:16] for c in hourly] == ["08:15", "09:15", "10:15"]
    assert [c[0] for c in daily] == ["2026-12-04T00:00:00+05:30"]
    assert daily[0][1:5] == [-1.0, 75.0, -1.0, 75.0]


def test_five_second_candles_and_ltpc_volume_from_ltq(tmp_path: Path) -> None:
    """Without vtt (ltpc mode) a candle's volume is the sum of its trades' quantities."""
    seconds = [0, 1, 4.9, 5, 12]
    write(
        tmp_path,
        [
            tick(OPEN + dt.timedelta(seconds=s), 10.0 + i, i, ltq=i + 1, mode="ltpc")
            for i, s in enumerate(seconds)
        ],
    )

    found = query.candles(tmp_path, KEY, "5s", *WHOLE_DAY)

    assert found == [
        ["2026-12-04T09:15:00+05:30", 10.0, 12.0, 10.0, 12.0, 6, 0],
        ["2026-12-04T09:15:05+05:30", 13.0, 13.0, 13.0, 13.0, 4, 0],
        ["2026-12-04T09:15:10+05:30", 14.0, 14.0, 14.0, 14.0, 5, 0],
    ]


def test_candles_respect_the_range(tmp_path: Path) -> None:
    write(tmp_path, [tick(at(m), float(m), m) for m in (0, 1, 2, 3)])
    found = query.candles(tmp_path, KEY, "1m", at(1), at(3))
    assert [c[1] for c in found] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("5s", 5), ("1m", 60), ("15m", 900), ("1h", 3600), ("24h", 86_400), ("1d", 86_400)],
)
def test_intervals(text: str, seconds: int) -> None:
    assert query.parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "5", "1w", "2d", "1441m", "25h", "-1m", "1.5m", "m"])
def test_bad_intervals_name_the_allowed_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"<n>s .*1d"):
        query.parse_interval(text)


def test_ticks_command_prints_a_table_and_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from services.recorder import ticks_command

    write(tmp_path, [tick(at(0), 100.0, 0, volume=10), tick(at(1), 101.5, 1, volume=12)])
    parser = argparse.ArgumentParser()
    ticks_command.add_arguments(parser)
    common = [KEY, "--dir", str(tmp_path), "--from", "2026-12-04T09:00", "--to", "2026-12-04"]

    assert ticks_command.run(parser.parse_args([*common[:-1], "2026-12-05"])) == 0
    table = capsys.readouterr().out
    assert "2026-12-04T09:16:00+05:30" in table and "101.50" in table and "2 ticks" in table

    assert ticks_command.run(parser.parse_args([*common[:-1], "2026-12-05", "--json"])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(t["ltp"], t["volume"]) for t in lines] == [(100.0, 10), (101.5, 12)]

    assert ticks_command.run(parser.parse_args(common)) == 2  # 'to' before 'from'
    assert "before" in capsys.readouterr().err
    assert ticks_command.run(parser.parse_args(["nokey", "--dir", str(tmp_path)])) == 2
