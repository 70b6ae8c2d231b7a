"""Running a service's ASGI app under uvicorn, the same way for every service, behind the same
guards (`protect`): the Host allowlist, no framing, forwarded-for from trusted proxies only."""

from __future__ import annotations

import argparse
import logging
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from shared.framing import NoFraming
from shared.hosts import HostGuard, policy_for
from shared.logs import configure_logging
from shared.settings import CommonSettings

logger = logging.getLogger(__name__)


def add_server_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=default_port, help="port (0: any free port)")


def protect(app: ASGIApp, settings: CommonSettings, *, behind_proxies: bool = True) -> ASGIApp:
    """`app` as every service serves it: the Host allowlist first (judging X-Forwarded-Host by the
    TCP peer, so before X-Forwarded-For replaces it), every answer unframeable, then forwarded-for
    believed from `TRUSTED_PROXIES` only. The edge (`behind_proxies=False`) believes none."""
    policy = policy_for(settings, behind_proxies=behind_proxies)
    if policy.any_host:
        logger.warning("TICKSTREAM_ALLOWED_HOSTS=*: any Host is served (no DNS-rebinding defence)")
    inner = app
    if behind_proxies:
        trusted = ",".join(settings.trusted_proxies)
        inner = cast(ASGIApp, ProxyHeadersMiddleware(app, trusted_hosts=trusted))  # type: ignore[arg-type]
    return NoFraming(HostGuard(inner, policy))


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
        "proxy_headers": False,  # `protect` applies them, after the Host check
        "timeout_graceful_shutdown": 5,
    }
    config_options.update(options)
    config = uvicorn.Config(
        protect(app, settings), host=args.host, port=args.port, **config_options
    )
    server = uvicorn.Server(config)
    logging.getLogger(f"tickstream.{name}").info("starting on %s:%d", args.host, args.port)
    server.run()
    return 0
