"""Running a service's ASGI app under uvicorn, the same way for every service."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from shared.logs import configure_logging
from shared.settings import CommonSettings


def add_server_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=default_port, help="port (0: any free port)")


def serve(
    app: ASGIApp,
    args: argparse.Namespace,
    settings: CommonSettings,
    name: str,
    **options: Any,
) -> int:
    """Run `app`; `options` are extra uvicorn.Config arguments (they override the defaults)."""
    configure_logging(settings.log_level, settings.log_format, service=name)
    config_options: dict[str, Any] = {
        "log_config": None,  # keep our handlers; uvicorn logs through the root logger
        "access_log": False,
        "ws_max_size": 1 << 20,
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
        "timeout_graceful_shutdown": 5,
    }
    config_options.update(options)
    config = uvicorn.Config(app, host=args.host, port=args.port, **config_options)
    server = uvicorn.Server(config)
    logging.getLogger(f"tickstream.{name}").info("starting on %s:%d", args.host, args.port)
    server.run()
    return 0
