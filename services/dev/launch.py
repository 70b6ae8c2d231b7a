"""How a planned service becomes a command: the checks before start-up, argv and environment.

Owns what must hold before anything starts (the front's port is free; `redis-server` is on PATH
unless an existing Redis is used), each service's `Command`: its argv (a `tickstream` subcommand
run by this Python, or `redis-server` with its data and its config file, which holds its
password, in the run's working directory), its
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
from services.dev.topology import FRONT, REDIS_PASSWORD, Options, ServiceSpec

__all__ = [
    "PROJECT_ROOT",
    "StartError",
    "argv",
    "check_port_free",
    "command",
    "environment",
    "preflight",
    "redis_config",
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
            str(redis_config(workdir, spec.env[REDIS_PASSWORD])),
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


def redis_config(workdir: Path, password: str) -> Path:
    """Redis's config file, 0600 from its creation: `--requirepass` on the command line would
    show the password to anyone on the machine (`ps`)."""
    path = workdir / "redis.conf"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as config:
        # a token_urlsafe password: nothing in it needs quoting
        config.write(f"requirepass {password}\n")
    return path


def environment(spec: ServiceSpec) -> dict[str, str]:
    """The planned environment (Redis: ours), unbuffered, with this project importable."""
    env = dict(spec.env) if spec.command != "redis-server" else dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env
