"""Readiness: polling a starting service until it answers, or saying why it never did.

Owns the probes (HTTP `GET /readyz`, falling back to `/healthz` for a service that has no
readiness; a Redis PING for `redis-server`) and the wait: until the service is ready, until its
process exits (then its status and last lines), or until the deadline (then the last answer).

It must not start, stop or signal anything: a failure is a `StartError` for the caller to act
on.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

import httpx

from services.dev.launch import StartError
from services.dev.process import ChildProcess
from services.dev.topology import REDIS_PASSWORD, ServiceSpec

__all__ = ["redis_ping", "wait_all_ready", "wait_ready"]

POLL_INTERVAL = 0.1


def redis_ping(port: int, password: str | None = None) -> bool:
    """Whether Redis answers PING (after AUTH with `password`, a token_urlsafe one)."""
    auth = f"AUTH {password}\r\n".encode() if password else b""
    expected = (b"+OK\r\n" if password else b"") + b"+PONG\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(auth + b"PING\r\n")
            answer = b""
            while len(answer) < len(expected) and (chunk := sock.recv(64)):
                answer += chunk
            return answer.startswith(expected)
    except OSError:
        return False


def wait_all_ready(started: Iterable[tuple[ServiceSpec, ChildProcess]], timeout: float) -> None:
    """Wait for services started together, all against one deadline `timeout` from now."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        for spec, process in started:
            wait_ready(spec, process, deadline, client, timeout)


def wait_ready(
    spec: ServiceSpec,
    process: ChildProcess,
    deadline: float,
    client: httpx.Client,
    timeout: float,
) -> None:
    """Return once `spec` answers; `StartError` when its process exits or `deadline` passes.

    `timeout` is only for the message: the whole wait the deadline stands for."""
    last = "no answer"
    path = spec.ready_path
    while True:
        code = process.exit_status()
        if code is not None:
            process.finish()
            raise StartError(
                f"{spec.name} exited with status {code} while starting; its last lines:\n"
                + process.tail()
            )
        if path is None:
            if redis_ping(spec.port, spec.env.get(REDIS_PASSWORD)):
                return
        else:
            try:
                response = client.get(spec.url + path)
            except httpx.HTTPError as error:
                last = type(error).__name__
            else:
                if response.status_code == 200:
                    return
                if response.status_code == 404 and path == "/readyz":
                    path = "/healthz"  # a service without readiness: alive is the best sign
                    continue
                last = f"{path}: HTTP {response.status_code} {response.text[:200]}"
        if time.monotonic() > deadline:
            raise StartError(
                f"{spec.name} was not ready within {timeout:.0f}s "
                f"(last answer: {last}); its last lines:\n" + process.tail()
            )
        time.sleep(POLL_INTERVAL)
