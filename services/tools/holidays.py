"""`tickstream holidays [--date D]`: the exchanges' holiday calendar."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.tools.common import (
    ToolError,
    find_token,
    format_table,
    open_client,
    print_json,
    run_tool,
)
from services.tools.settings import ToolSettings
from shared.upstox.errors import UpstoxAuthError
from shared.upstox.models import Holiday


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date", type=dt.date.fromisoformat, help="only this date (YYYY-MM-DD)", metavar="D"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def holiday_rows(holidays: list[Holiday]) -> list[list[str]]:
    rows = []
    for holiday in holidays:
        special = ", ".join(
            f"{o.exchange} {o.start:%H:%M}-{o.end:%H:%M}" for o in holiday.open_exchanges
        )
        rows.append(
            [
                holiday.date.isoformat(),
                holiday.description,
                holiday.holiday_type,
                ", ".join(holiday.closed_exchanges),
                special,
            ]
        )
    return rows


def run(args: argparse.Namespace) -> int:
    async def main(settings: ToolSettings) -> int:
        # Upstox serves the calendar without a login, so a token is used only if there is one.
        token, problem = await find_token(settings)
        async with open_client(settings) as upstox:
            try:
                holidays = await upstox.holidays(token, args.date)
            except UpstoxAuthError:
                if token is not None:
                    raise
                raise ToolError(
                    f"this Upstox wants a login for the calendar, and there is no token: "
                    f"{problem}; log in through the auth service or set UPSTOX_ACCESS_TOKEN"
                ) from None
        if args.json:
            print_json([holiday.model_dump(mode="json") for holiday in holidays])
            return 0
        if not holidays:
            when = args.date.isoformat() if args.date else "this year"
            sys.stdout.write(f"no market holidays for {when}\n")
            return 0
        headers = ["DATE", "DESCRIPTION", "TYPE", "CLOSED EXCHANGES", "OPEN (IST)"]
        sys.stdout.write(format_table(headers, holiday_rows(holidays)) + "\n")
        return 0

    return run_tool("holidays", main)
