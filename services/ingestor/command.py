"""`tickstream ingestor`: run the ingestor with its health and metrics endpoints."""

from __future__ import annotations

import argparse

from services.ingestor.app import create_app
from services.ingestor.settings import IngestorSettings
from shared.serve import add_server_arguments, serve
from shared.settings import load_settings_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, default_port=8002)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_exit(IngestorSettings)
    return serve(create_app(settings), args, settings, "ingestor")
