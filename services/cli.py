"""`tickstream`: one console script, a subcommand per service or tool.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so a tool never pays
for a service's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Protocol


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# subcommand -> (module, one-line help). Keep the help here so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "simulator": ("services.simulator.cli", "run the Upstox simulator (login, REST, V3 feed)"),
    "decode": ("shared.decode_cli", "print raw feed frames as JSON lines (MessageToDict form)"),
    "auth": ("services.auth.command", "run the auth service (Upstox OAuth login, stored session)"),
    "operator-link": ("services.auth.link_command", "print a one-time operator sign-in link"),
    "gateway": ("services.gateway.command", "run a gateway replica (WebSocket fan-out, HTTP API)"),
    "ingestor": ("services.ingestor.command", "run the ingestor (upstream feed -> Redis ticks)"),
    "profile": ("services.tools.profile", "show the Upstox profile of the logged-in user"),
    "history": ("services.tools.history", "print historical or intraday candles of an instrument"),
    "holidays": ("services.tools.holidays", "list market holidays (this year, or one date)"),
    "front": ("services.front.command", "reverse proxy: one port for dashboard, /ws, auth, login"),
    "dev": ("services.dev.command", "run the whole system locally without Docker"),
    "token": ("services.tools.token", "issue a viewer token (GATEWAY_TOKEN_SECRET, HS256)"),
    "recorder": ("services.recorder.command", "run the recorder (the feed to Parquet, queries)"),
    "ticks": ("services.recorder.ticks_command", "print the recorded ticks of an instrument"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage or the unknown-command error, then exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    command: Command = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"tickstream {name}", description=help_text)
    command.add_arguments(sub_parser)
    return command.run(sub_parser.parse_args(rest))


if __name__ == "__main__":
    raise SystemExit(main())
