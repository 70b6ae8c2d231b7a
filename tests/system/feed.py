"""A WebSocket client that behaves like the dashboard: subscribes, and reconnects when closed.

It records what a user would see (updates with their sequence numbers and epochs, connections,
close codes, status messages) so drills can assert on counts and order, never on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Origin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Update:
    connection: int  # 1 for the first connection, 2 after the first reconnect, ...
    kind: str  # "initial_feed" (a snapshot) or "live_feed"
    key: str
    seq: int
    epoch: str


class FeedClient:
    def __init__(
        self,
        url: str,
        keys: list[str],
        *,
        mode: str = "ltpc",
        origin: str | None = None,
        record: bool = True,
    ) -> None:
        self.url = url
        self.keys = keys
        self.mode = mode
        self.origin = origin
        self.record = record  # False: count updates only (long runs)
        self.counted = 0  # every update received, recorded or not
        self.updates: list[Update] = []
        self.connections = 0
        self.closes: list[tuple[int | None, str]] = []  # per ended connection: code, reason
        self.failures: list[str] = []  # connection attempts that failed
        self.statuses: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FeedClient:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with connect(
                    self.url,
                    origin=Origin(self.origin) if self.origin else None,
                    proxy=None,
                    open_timeout=10,
                    max_size=None,
                ) as ws:
                    self.connections += 1
                    number = self.connections
                    request = {"op": "subscribe", "keys": self.keys, "mode": self.mode}
                    await ws.send(json.dumps({**request, "id": f"sub-{number}"}))
                    delay = 0.1
                    with contextlib.suppress(ConnectionClosed):
                        async for message in ws:
                            self._handle(number, message)
                    self.closes.append((ws.close_code, ws.close_reason or ""))
            except (OSError, InvalidHandshake) as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)  # as the dashboard: back off, then try again

    def _handle(self, connection: int, message: str | bytes) -> None:
        frame = json.loads(message)
        kind = frame.get("type")
        if kind in ("initial_feed", "live_feed"):
            feeds = frame.get("feeds", {})
            self.counted += len(feeds)
            if not self.record:
                return
            meta = frame.get("meta", {})
            for key in feeds:
                info = meta.get(key, {})
                self.updates.append(
                    Update(connection, kind, key, int(info.get("seq", -1)), str(info.get("epoch")))
                )
        elif kind == "status":
            self.statuses.append(frame)
        elif kind == "error":
            self.errors.append(frame)

    # ---- what the drills ask ---------------------------------------------------------------

    def mark(self) -> int:
        return len(self.updates)

    def since(self, mark: int) -> list[Update]:
        return self.updates[mark:]

    def snapshot_keys(self, connection: int) -> set[str]:
        """Keys that came in an `initial_feed` on that connection."""
        return {
            u.key for u in self.updates if u.connection == connection and u.kind == "initial_feed"
        }

    def epochs(self) -> set[str]:
        return {u.epoch for u in self.updates}

    def live(self, mark: int = 0, **where: Any) -> list[Update]:
        return [
            u
            for u in self.since(mark)
            if u.kind == "live_feed" and all(getattr(u, k) == v for k, v in where.items())
        ]

    def describe(self) -> str:
        last = self.updates[-3:]
        return (
            f"{len(self.updates)} updates (last {last}), {self.connections} connections, "
            f"closes {self.closes[-3:]}, failures {self.failures[-3:]}, statuses "
            f"{self.statuses[-3:]}, errors {self.errors[-3:]}"
        )

    async def wait_for(self, predicate: Callable[[], bool], what: str, within: float = 60) -> None:
        """Wait until `predicate()` holds; `within` (s) is only an upper bound, never asserted."""
        deadline = time.monotonic() + within
        while not predicate():
            if self._task is not None and self._task.done():
                self._task.result()  # the client itself broke: show why
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.describe()}")
            await asyncio.sleep(0.05)

    async def wait_live(self, count: int, mark: int = 0, what: str = "live updates") -> None:
        await self.wait_for(lambda: len(self.live(mark)) >= count, f"{count} {what}")
