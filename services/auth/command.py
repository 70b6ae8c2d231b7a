"""`tickstream auth`: run the auth service."""

from __future__ import annotations

import argparse

from shared.serve import add_server_arguments, serve
from shared.settings import load_settings_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, default_port=8001)


def run(args: argparse.Namespace) -> int:
    from services.auth.app import create_app
    from services.auth.settings import AuthSettings

    settings = load_settings_or_exit(AuthSettings)
    return serve(create_app(settings), args, settings, "auth")
