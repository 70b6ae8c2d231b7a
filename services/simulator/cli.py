"""`tickstream simulator`: the Upstox stand-in (login, REST and the V3 feed) on one port."""

from __future__ import annotations

import argparse

from shared.serve import add_server_arguments, serve
from shared.settings import load_settings_or_exit

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, DEFAULT_PORT)


def run(args: argparse.Namespace) -> int:
    from services.simulator.app import create_app
    from services.simulator.settings import SimulatorSettings

    settings = load_settings_or_exit(SimulatorSettings)
    return serve(create_app(settings), args, settings, "simulator")
