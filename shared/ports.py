"""Choosing a free TCP port for a server started moments later (dev stack, tests, benchmarks).

Owns port choice only; it starts nothing and keeps no socket open.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A port nothing listens on, chosen below the ephemeral range.

    The services start seconds after their ports are chosen; a port from the ephemeral range
    (what binding port 0 gives) may meanwhile become the local end of some outgoing connection,
    and the service then fails to bind. Ports below the range are only ever taken by listeners.
    """
    taken = taken if taken is not None else set()
    low, _ = _ephemeral_range()
    if low > 11000:
        for _ in range(200):
            port = random.randrange(10000, low)
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            taken.add(port)
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
    taken.add(chosen)
    return chosen
