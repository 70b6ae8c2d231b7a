"""`tickstream recorder`: run the recorder with its health, status, metrics and query API."""

from __future__ import annotations

import argparse

from services.recorder.app import create_app
from services.recorder.settings import RecorderSettings
from shared.serve import add_server_arguments, serve
from shared.settings import load_settings_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, default_port=8006)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(RecorderSettings)
    return serve(create_app(settings), args, settings, "recorder")
