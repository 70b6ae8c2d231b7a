"""A real Redis for the test session: `redis-server` from PATH, or a testcontainers container.

The server can be stopped and started again on the same port, for fault tests.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from shared.ports import free_port


class RedisUnavailable(RuntimeError):
    """Neither a `redis-server` binary nor a Docker engine is available."""


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class RedisServer(Protocol):
    host: str
    port: int

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LocalRedisServer:
    """`redis-server` as a child process, no persistence, on a fixed free port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tickstream-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", self.host,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._dir),
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.host, self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class ContainerRedisServer:
    """Redis in a container via testcontainers, for machines with Docker but no binary."""

    def __init__(self) -> None:
        from testcontainers.community.redis import RedisContainer

        self.host = "127.0.0.1"
        self.port = free_port()
        self._container: Any = RedisContainer("redis:7-alpine").with_bind_ports(6379, self.port)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self._container.start()
        wait_for_port(self.host, self.port)

    def stop(self) -> None:
        self._container.stop()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self._container.stop()


@contextlib.contextmanager
def session_redis() -> Iterator[LocalRedisServer | ContainerRedisServer]:
    binary = shutil.which("redis-server")
    server: LocalRedisServer | ContainerRedisServer
    if binary:
        server = LocalRedisServer(binary)
    elif shutil.which("docker"):
        server = ContainerRedisServer()
    else:
        raise RedisUnavailable(
            "the tests need a real Redis: install redis-server (apt-get install redis-server) "
            "or run a Docker engine"
        )
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def redis_from_config(config: Path, data: Path) -> Iterator[int]:
    """A redis-server started as compose starts it (its config file first, then options: no
    snapshots, no append-only file, data in `data`), on a free port of 127.0.0.1."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", str(config), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
