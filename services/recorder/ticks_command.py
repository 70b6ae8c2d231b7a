"""`tickstream ticks KEY`: the recorded ticks of an instrument, read straight from the recording's
files (`query.py`), so it needs no running server and no Redis: a table by default, JSON lines
with `--json` (one tick a line, for `jq` and scripts)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.recorder import query
from services.recorder.api import TICKS_SPAN, TimeError, time_range
from services.tools.common import format_table
from shared.instruments import is_instrument_key

DEFAULT_LIMIT = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help='instrument key, e.g. "NSE_EQ|INE002A01018"')
    parser.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="first time: ISO 8601 (IST unless an offset is given) or epoch ms (an hour ago)",
    )
    parser.add_argument("--to", dest="end", metavar="T", help="end time, excluded (now)")
    parser.add_argument(
        "--dir",
        default=os.environ.get("RECORDER_DIR", "./recording"),
        help="the recording's root (RECORDER_DIR, else ./recording)",
    )
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"at most N ticks ({DEFAULT_LIMIT})"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    if not is_instrument_key(args.key):
        return _fail(f"{args.key!r} is not an instrument key like 'NSE_EQ|INE002A01018'")
    if args.limit < 1:
        return _fail("--limit must be 1 or more")
    try:
        since, until = time_range(args.start, args.end, TICKS_SPAN)
    except TimeError as error:
        return _fail(str(error))
    found = query.ticks(args.dir, args.key, since, until, args.limit)
    if args.json:
        for tick in found:
            sys.stdout.write(json.dumps(tick) + "\n")
        return 0
    if not found:
        sys.stdout.write(
            f"no ticks of {args.key} from {since.isoformat()} to {until.isoformat()}\n"
        )
        return 0
    columns = ("ts", "ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty")
    rows = [[_cell(tick[name]) for name in columns] for tick in found]
    headers = ["TIME (IST)", "LTP", "LTQ", "VOLUME", "OI", "BID", "BID QTY", "ASK", "ASK QTY"]
    table = format_table(headers, rows, right=range(1, len(columns)))
    more = " (the limit: there may be more)" if len(found) == args.limit else ""
    sys.stdout.write(f"{table}\n{len(found)} ticks{more}\n")
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"tickstream ticks: {message}\n")
    return 2
