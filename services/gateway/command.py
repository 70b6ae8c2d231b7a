"""`tickstream gateway`: run one gateway replica (WebSocket fan-out and HTTP API)."""

from __future__ import annotations

import argparse
import resource

from shared.serve import add_server_arguments, serve
from shared.settings import load_settings_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, default_port=8000)


def raise_file_limit() -> int:
    """Lift the soft open-files limit to the hard one: each client is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def run(args: argparse.Namespace) -> int:
    from services.gateway.app import create_app, server_options
    from services.gateway.hub import Hub
    from services.gateway.settings import GatewaySettings

    settings = load_settings_or_exit(GatewaySettings)
    raise_file_limit()
    app = create_app(settings)
    hub: Hub = app.state.hub
    # SIGTERM: not ready, handshakes refused, clients closed 1012 over the drain window, then
    # uvicorn's shutdown (listener closed, lifespan's end: the demand withdrawn).
    options = server_options(settings)
    return serve(app, args, settings, "gateway", drain=hub.drain.run, **options)
