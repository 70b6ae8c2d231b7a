"""Waiting for a condition in tests: an upper bound on how long, never a timing assertion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    probe: Callable[[], Any], what: str, within: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll `probe` (sync or async) until it returns something truthy, and return that; fail
    naming `what` (and the last value seen) after `within` seconds."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        result = probe()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
