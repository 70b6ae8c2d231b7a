"""A rolling restart without a stampede: SIGTERM on one of two gateways behind the front while
500 reconnecting clients watch through it.

Each client is a small WebSocket client with jittered reconnect that subscribes on every
connect and tracks each key's sequence numbers across reconnects. The stopped gateway's
clients must all be back (through the front, on the other gateway) within the drain window
plus their backoff, never be refused on the way (the front passes a draining replica's 503 on
to the next), never see an update twice or out of order, and reconnect spread over the window:
counted per second, never timed one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)
logger = logging.getLogger(__name__)

CLIENTS = 500
DRAIN = 6.0  # GATEWAY_DRAIN_SECONDS of the stopped gateway
BACKOFF = (0.1, 0.5)  # the clients' reconnect delay, uniform (jitter)
MAX_SHARE_PER_SECOND = 0.35  # spread over 6 s: about 1/6 of the drained clients a second
KEYS = ["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank", "NSE_EQ|INE002A01018"]


@dataclass
class Viewer:
    """One reconnecting client: its connects, closes, refusals and per-key (epoch, seq)."""

    url: str
    key: str
    connects: list[float] = field(default_factory=list)  # the loop's clock
    closes: list[tuple[int | None, float]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # handshake statuses other than 101
    last: dict[str, tuple[str, int]] = field(default_factory=dict)
    updates: int = 0
    disorder: list[str] = field(default_factory=list)
    open: bool = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with connect(self.url, open_timeout=10, proxy=None) as ws:
                    self.open = True
                    self.connects.append(loop.time())
                    request = {"op": "subscribe", "keys": [self.key], "mode": "ltpc", "id": 1}
                    await ws.send(orjson.dumps(request).decode())
                    with contextlib.suppress(Exception):
                        async for message in ws:
                            self._frame(orjson.loads(message))
                    self.open = False
                    self.closes.append((ws.close_code, loop.time()))
            except InvalidStatus as refused:
                self.refused.append(refused.response.status_code)
            except OSError:
                self.refused.append(0)
            self.open = False
            await asyncio.sleep(random.uniform(*BACKOFF))

    def _frame(self, frame: dict[str, object]) -> None:
        kind = frame.get("type")
        meta = frame.get("meta")
        if kind not in ("initial_feed", "live_feed") or not isinstance(meta, dict):
            return
        for key, stamp in meta.items():
            epoch, seq = str(stamp["epoch"]), int(stamp["seq"])
            before = self.last.get(key)
            if before is not None and before[0] == epoch:
                # A snapshot may repeat the last update seen; a live update must be newer.
                went_back = seq < before[1] if kind == "initial_feed" else seq <= before[1]
                if went_back:
                    self.disorder.append(f"{key}: {kind} seq {seq} after {before[1]}")
                    continue
            self.last[key] = (epoch, seq)
            self.updates += kind == "live_feed"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    overrides = {
        "GATEWAY_DRAIN_SECONDS": str(DRAIN),
        # Every client comes from 127.0.0.1 through the front.
        "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "0",
        # A slower market keeps 500 clients through one Python front cheap on a shared machine.
        "SIMULATOR_TICK_INTERVAL_MS": "500",
    }
    with running_stack(gateways=2, overrides=overrides) as running:
        yield running


@contextlib.asynccontextmanager
async def viewers(stack: Stack) -> AsyncIterator[list[Viewer]]:
    crowd = [Viewer(stack.front_ws_url, KEYS[n % len(KEYS)]) for n in range(CLIENTS)]
    tasks = [asyncio.create_task(viewer.run()) for viewer in crowd]
    try:
        yield crowd
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _census(crowd: list[Viewer]) -> bool:
    """False, logging how many clients are open, receiving, refused (for a failed wait)."""
    refused = Counter(status for v in crowd for status in v.refused)
    logger.info(
        "open %d, receiving %d, closes %s, refused %s",
        sum(v.open for v in crowd),
        sum(bool(v.updates) for v in crowd),
        Counter(code for v in crowd for code, _ in v.closes),
        refused,
    )
    return False


async def holds_all(base: str) -> bool:
    return await clients_of(base) == CLIENTS


async def clients_of(base: str) -> float | None:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            text = (await http.get(base + "/metrics")).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith("tickstream_gateway_clients "):
            return float(line.split()[1])
    return None


async def test_sigterm_on_one_gateway_moves_its_clients_to_the_other_without_a_stampede(
    stack: Stack,
) -> None:
    stopped, survivor = stack.gateways[0], stack.gateways[1]
    survivor_url = stack.dev.urls[survivor]
    loop = asyncio.get_running_loop()
    async with viewers(stack) as crowd:
        await eventually(
            lambda: all(v.open and v.updates for v in crowd) or _census(crowd),
            "every client connected and receiving live updates",
            within=90,
        )
        for viewer in crowd:
            viewer.refused.clear()
        stack.assert_survivors(stack.pids())
        signalled = loop.time()
        os.kill(stack.pids()[stopped], signal.SIGTERM)

        await eventually(lambda: not stack.running(stopped), "the drained gateway's exit", 60)
        drained = [v for v in crowd if v.closes]
        await eventually(
            lambda: all(v.open and len(v.connects) == 2 for v in drained),
            "every drained client back",
            within=DRAIN + 30,
        )
        await eventually(
            lambda: holds_all(survivor_url),
            "every client on the surviving gateway",
            within=30,
        )
        # Updates keep coming on the new connections.
        marks = {id(v): v.updates for v in drained}
        await eventually(
            lambda: all(v.updates > marks[id(v)] for v in drained), "updates after the move", 60
        )

    assert drained, "nobody was connected to the stopped gateway"
    codes = Counter(code for v in drained for code, _ in v.closes)
    per_second = Counter(int(v.connects[1] - signalled) for v in drained)
    busiest = max(per_second.values())
    logger.info(
        "%d drained; close codes %s; reconnects per second %s",
        len(drained),
        dict(codes),
        sorted(per_second.items()),
    )
    assert codes == {1012: len(drained)}, codes
    assert not [v.refused for v in drained if v.refused], "a reconnecting client was refused"
    assert busiest <= MAX_SHARE_PER_SECOND * len(drained), sorted(per_second.items())
    assert not [d for v in crowd for d in v.disorder], [d for v in crowd for d in v.disorder][:5]
