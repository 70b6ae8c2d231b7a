"""`tickstream simulator`: the Upstox stand-in (login, REST and the V3 feed) on one port; with
`--replay`, its feed serves a recording (`services.simulator.replay`) instead of the model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.serve import add_server_arguments, serve
from shared.settings import SettingsError, load_settings

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, DEFAULT_PORT)
    replay = parser.add_argument_group("replay (default: SIMULATOR_REPLAY* variables)")
    replay.add_argument(
        "--replay",
        metavar="PATH",
        help="serve a recording: its root (frames/day=*/...) or one frames .parquet file",
    )
    replay.add_argument("--speed", type=float, metavar="N", help="N times the recorded pace")
    replay.add_argument(
        "--from",
        dest="replay_from",
        metavar="T",
        help="skip frames received before T (ISO 8601, or HH:MM IST on the first recorded day)",
    )
    replay.add_argument(
        "--loop", action="store_true", default=None, help="start over at the recording's end"
    )


def run(args: argparse.Namespace) -> int:
    from services.simulator.app import create_app
    from services.simulator.replay import ReplayError
    from services.simulator.settings import SimulatorSettings

    overrides: dict[str, Any] = {}
    for option, field in (
        ("replay", "simulator_replay"),
        ("speed", "simulator_replay_speed"),
        ("replay_from", "simulator_replay_from"),
        ("loop", "simulator_replay_loop"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[field] = value
    try:
        settings = load_settings(SimulatorSettings, **overrides)
        app = create_app(settings)
    except (SettingsError, ReplayError) as error:
        sys.stderr.write(f"tickstream simulator: {error}\n")
        return 2
    return serve(app, args, settings, "simulator")
