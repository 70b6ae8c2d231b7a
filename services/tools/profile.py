"""`tickstream profile`: the logged-in user's Upstox profile."""

from __future__ import annotations

import argparse
import sys

from services.tools.common import open_client, print_json, resolve_token, run_tool
from services.tools.settings import ToolSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    async def main(settings: ToolSettings) -> int:
        token = await resolve_token(settings)
        async with open_client(settings) as upstox:
            profile = await upstox.profile(token)
        if args.json:
            print_json(profile.model_dump(mode="json"))
            return 0
        rows = [
            ("User ID", profile.user_id),
            ("Name", profile.user_name),
            ("E-mail", profile.email),
            ("Broker", profile.broker),
            ("User type", profile.user_type),
            ("Active", "yes" if profile.is_active else "no"),
            ("Exchanges", ", ".join(profile.exchanges)),
            ("Products", ", ".join(profile.products)),
            ("Order types", ", ".join(profile.order_types)),
            ("POA", "yes" if profile.poa else "no"),
            ("DDPI", "yes" if profile.ddpi else "no"),
        ]
        width = max(len(label) for label, _ in rows)
        sys.stdout.write("".join(f"{label.ljust(width)}  {value}\n" for label, value in rows))
        return 0

    return run_tool("profile", main)
