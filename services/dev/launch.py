"""How a planned service becomes a command: the checks before start-up, argv and environment.

Owns what must hold before anything starts (the front's port is free; `redis-server` is on PATH
unless an existing Redis is used), each service's `Command`: its argv (a `tickstream` subcommand
run by this Python, or `redis-server` with its data in the run's working directory), its
environment and its directory; and `StartError`, the one error a failed start-up is reported as.

It must not start, signal or wait for processes, nor choose ports or settings: those come
planned in the `ServiceSpec` (`topology`).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from services.dev.process import Command
from services.dev.topology import FRONT, Options, ServiceSpec

__all__ = [
    "PROJECT_ROOT",
    "StartError",
    "argv",
    "check_port_free",
    "command",
    "environment",
    "preflight",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class StartError(RuntimeError):
    """A service could not be started; the message says which, why, and its last log lines."""


def check_port_free(host: str, port: int) -> None:
    """Raise `StartError` when something already listens on `host:port`."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise StartError(
                f"port {port} on {host} is not free ({error.strerror}): stop whatever uses it "
                "or choose another port with --port"
            ) from None


def preflight(options: Options) -> None:
    """What would otherwise fail halfway through start-up, as one clear `StartError`."""
    check_port_free(options.host, options.port)
    if not options.redis_url and shutil.which("redis-server") is None:
        raise StartError(
            "redis-server was not found on PATH: install it (e.g. apt-get install "
            "redis-server) or set REDIS_URL to a running Redis"
        )


def command(spec: ServiceSpec, options: Options, python: str, workdir: Path) -> Command:
    """How `spec` is run, from the run's working directory."""
    # not the caller's directory: a stray `.env` there must not change the demo
    return Command(argv(spec, options, python, workdir), environment(spec), workdir)


def argv(spec: ServiceSpec, options: Options, python: str, workdir: Path) -> list[str]:
    """The command line of `spec`; Redis's data directory is made under `workdir`."""
    if spec.command == "redis-server":
        data = workdir / "redis"
        data.mkdir(exist_ok=True)
        # No --save "": Redis's default snapshots are kept, so a graceful restart (SIGTERM)
        # keeps the stored login, as a restarted Redis with a volume does under compose.
        return [
            "redis-server",
            "--port", str(spec.port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--appendonly", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
    host = options.host if spec.name == FRONT else "127.0.0.1"
    return [
        python,
        "-m",
        "services.cli",
        spec.command,
        "--host",
        host,
        "--port",
        str(spec.port),
        *spec.args,
    ]


def environment(spec: ServiceSpec) -> dict[str, str]:
    """The planned environment (Redis: ours), unbuffered, with this project importable."""
    env = dict(spec.env) if spec.command != "redis-server" else dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env
