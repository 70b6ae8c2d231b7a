"""Running a service's ASGI app under uvicorn, the same way for every service, behind the same
guards (`protect`): the Host allowlist, no framing, forwarded-for from trusted proxies only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType
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


Drain = Callable[[], Awaitable[None]]


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM or SIGINT runs `drain` while the server still
    serves (the listener open, so `/readyz` can say 503 and handshakes can be refused with a
    status a proxy acts on), and only then shuts down as uvicorn does. A second signal during
    the drain ends at once (uvicorn's forced exit: no waiting, no lifespan shutdown)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self.should_exit:
            logger.warning("%s during the drain: stopping at once", signal.Signals(sig).name)
            self.force_exit = self.should_exit = True
        elif not self.started or self._loop is None:
            super().handle_exit(sig, frame)  # still starting: nothing to drain
        else:
            # A signal handler runs between two bytecodes of the loop's own thread: hand over
            # through the loop's self-pipe rather than touching its state here.
            self._loop.call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, name: str) -> None:
        if self._draining is None and not self.should_exit:
            logger.info("%s: draining before stopping", name)
            self._draining = asyncio.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception:
            logger.exception("the drain failed; stopping")
        finally:
            self.should_exit = True


def serve(
    app: ASGIApp,
    args: argparse.Namespace,
    settings: CommonSettings,
    name: str,
    drain: Drain | None = None,
    **options: Any,
) -> int:
    """Run `app`; `options` are extra uvicorn.Config arguments (they override the defaults).
    With `drain`, the first SIGTERM/SIGINT awaits it before the usual shutdown."""
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
    server = uvicorn.Server(config) if drain is None else DrainingServer(config, drain)
    logging.getLogger(f"tickstream.{name}").info("starting on %s:%d", args.host, args.port)
    server.run()
    return 0
