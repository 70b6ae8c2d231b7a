"""`tickstream dev`: the whole system as local processes, one port for the browser."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from services.dev.stack import DevStack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="the front's port (default 8080)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="the front's interface (services stay on 127.0.0.1)"
    )
    parser.add_argument(
        "--gateways", type=int, default=1, metavar="N", help="gateway replicas (default 1)"
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="the front as the browser reaches it, when not http://HOST:PORT (login redirects)",
    )


class _Printer:
    """Writes each service's lines as `name | line`, whole lines only, from many threads."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        self.write(f"{name:<{self.width}} | {line}\n")

    def write(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text)
            sys.stdout.flush()


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _hurry(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from services.dev.stack import DevStack, StartError
    from services.dev.topology import Options

    try:
        options = Options(
            host=args.host,
            port=args.port,
            gateways=args.gateways,
            redis_url=os.environ.get("REDIS_URL") or None,
            public_url=args.public_url,
        )
    except ValueError as error:
        sys.stderr.write(f"tickstream dev: {error}\n")
        return 2
    stack = DevStack(options)
    printer = _Printer(max(len(name) for name in stack.names))
    stack.log_sink = printer
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        printer.write(f"tickstream dev: starting {', '.join(stack.names)}\n")
        stack.start()
        printer.write(_banner(stack))
        _watch(stack, printer)
    except StartError as error:
        sys.stderr.write(f"tickstream dev: {error}\n")
        return 1
    except _Stop as stop:
        printer.write(f"tickstream dev: {stop}, stopping every service\n")
    finally:
        # A second Ctrl-C or SIGTERM while stopping escalates to SIGKILL (DevStack.stop).
        signal.signal(signal.SIGINT, _hurry)
        signal.signal(signal.SIGTERM, _hurry)
        with contextlib.suppress(KeyboardInterrupt):
            stack.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    printer.write("tickstream dev: stopped\n")
    return 0


def _banner(stack: DevStack) -> str:
    lines = [
        "",
        f"  dashboard      {stack.front_url}/",
        f"  operator       {stack.front_url}/auth/  (sign in with auth's one-time link above,"
        " or `tickstream operator-link`; then log in to the simulated Upstox)",
        f"  WebSocket      {stack.front_url.replace('http', 'ws', 1)}/ws",
        "",
        "  services (each answers /healthz):",
    ]
    lines += [
        f"    {name:<12} {_without_password(url)}"
        for name, url in stack.urls.items()
        if name != "front"
    ]
    if "redis" in stack.names:
        lines.append(f"    (Redis's password: {stack.workdir / 'redis.conf'})")
    lines += ["", "  Ctrl-C stops everything.", ""]
    return "\n".join(lines) + "\n"


def _without_password(url: str) -> str:
    """A terminal's scrollback is no place for Redis's password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _watch(stack: DevStack, printer: _Printer) -> None:
    """Report each service that exits on its own, once; the rest keep running."""
    reported: set[tuple[str, int]] = set()
    wake = threading.Event()
    while True:
        for name, code in stack.unexpected_exits().items():
            if (name, code) not in reported:
                reported.add((name, code))
                printer.write(
                    f"tickstream dev: {name} exited with status {code}; the others keep running "
                    "(Ctrl-C stops everything)\n"
                )
        if len(reported) == len(stack.names):
            raise _Stop("every service exited")
        wake.wait(0.5)
