"""`tickstream history KEY`: historical (or today's intraday) candles of one instrument."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.tools.common import (
    ToolError,
    format_table,
    open_client,
    print_json,
    resolve_token,
    run_tool,
)
from services.tools.settings import ToolSettings
from shared.instruments import is_instrument_key
from shared.ist import IST
from shared.upstox.client import CANDLE_UNITS
from shared.upstox.models import Candle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help='instrument key, e.g. "NSE_INDEX|Nifty 50"')
    parser.add_argument("--unit", choices=CANDLE_UNITS, default="days", help="candle unit")
    parser.add_argument("--interval", type=int, default=1, help="units per candle (default 1)")
    parser.add_argument(
        "--from", dest="from_date", type=dt.date.fromisoformat, metavar="D", help="first date"
    )
    parser.add_argument(
        "--to", dest="to_date", type=dt.date.fromisoformat, metavar="D", help="last date (today)"
    )
    parser.add_argument("--intraday", action="store_true", help="today's candles instead")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def candle_rows(candles: list[Candle], daily: bool = False) -> list[list[str]]:
    """Table rows; daily (and longer) candles show the date alone."""
    stamp = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    return [
        [
            candle.ts.astimezone(IST).strftime(stamp),
            f"{candle.open:.2f}",
            f"{candle.high:.2f}",
            f"{candle.low:.2f}",
            f"{candle.close:.2f}",
            str(candle.volume),
            str(candle.oi),
        ]
        for candle in candles
    ]


def _check(args: argparse.Namespace) -> None:
    if not is_instrument_key(args.key):
        raise ToolError(f"{args.key!r} is not an instrument key like 'NSE_INDEX|Nifty 50'")
    if args.interval < 1:
        raise ToolError("--interval must be 1 or more")
    if args.intraday and (args.from_date or args.to_date):
        raise ToolError("--intraday takes no --from/--to (it is always today)")
    if args.from_date and args.to_date and args.from_date > args.to_date:
        raise ToolError("--from is after --to")


def run(args: argparse.Namespace) -> int:
    async def main(settings: ToolSettings) -> int:
        _check(args)
        token = await resolve_token(settings)
        async with open_client(settings) as upstox:
            if args.intraday:
                candles = await upstox.intraday_candles(token, args.key, args.unit, args.interval)
            else:
                to_date = args.to_date or dt.datetime.now(IST).date()
                candles = await upstox.historical_candles(
                    token, args.key, args.unit, args.interval, to_date, args.from_date
                )
        if args.json:
            print_json([candle.model_dump(mode="json") for candle in candles])
            return 0
        if not candles:
            sys.stdout.write(f"no candles for {args.key}\n")
            return 0
        daily = args.unit in ("days", "weeks", "months")
        first = "DATE" if daily else "TIME (IST)"
        headers = [first, "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "OI"]
        table = format_table(headers, candle_rows(candles, daily), right=range(1, 7))
        sys.stdout.write(f"{table}\n{len(candles)} candles\n")
        return 0

    return run_tool("history", main)
