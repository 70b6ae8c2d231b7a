"""A gateway process's drain on SIGTERM (rolling restarts): not ready at once, new handshakes
refused, every client closed 1012 "service restart" at moments spread over
GATEWAY_DRAIN_SECONDS, then the process exits; a second signal ends it at once.

The gateway is a real `tickstream gateway` process (signals are the point), its clients real
WebSocket clients; the spread is judged by counting closes per quarter of the window, never by
timing one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from services.gateway.drain import close_offsets
from shared.ports import free_port
from tests.support.waiting import eventually

CLIENTS = 40
WINDOW = 4.0  # GATEWAY_DRAIN_SECONDS of the spread test
EXIT_MARGIN = 20.0  # bound on the wait for the exit beyond the window (close timeout 5 s)


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    base: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.base.removeprefix("http") + "/ws"


@contextlib.asynccontextmanager
async def gateway_process(redis_url: str, log: Path, drain: float) -> AsyncIterator[Gateway]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_DRAIN_SECONDS": str(drain)}
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.cli", "gateway", "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(process, f"http://127.0.0.1:{port}")
    try:
        await eventually(lambda: ready(gateway.base), "the gateway ready", within=30)
        yield gateway
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def ready(base: str) -> bool:
    return await readyz(base) == 200


async def draining(base: str) -> bool:
    return await readyz(base) == 503


async def readyz(base: str) -> int | None:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
            return (await http.get(base + "/readyz")).status_code
    except httpx.TransportError:
        return None


async def metric(base: str, name: str) -> float | None:
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        text = (await http.get(base + "/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def handshake_status(url: str) -> int:
    """101 for a connection taken (closed again at once), else the refusal's status."""
    try:
        async with connect(url, open_timeout=5, proxy=None):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@dataclass
class Closed:
    code: int | None
    reason: str | None
    at: float  # the loop's clock


async def until_closed(ws: ClientConnection) -> Closed:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass
    return Closed(ws.close_code, ws.close_reason, asyncio.get_running_loop().time())


async def open_clients(url: str, count: int) -> list[asyncio.Task[Closed]]:
    sockets = [await connect(url, open_timeout=5, proxy=None) for _ in range(count)]
    return [asyncio.create_task(until_closed(ws)) for ws in sockets]


def per_quarter(moments: list[float], start: float, window: float) -> list[int]:
    counts = [0, 0, 0, 0]
    for at in moments:
        counts[max(0, min(3, int((at - start) / (window / 4))))] += 1
    return counts


def test_close_offsets_put_one_close_in_each_equal_slot_of_the_window() -> None:
    rng = random.Random(7)
    for count, window in ((1, 10.0), (7, 3.0), (1000, 10.0), (3, 0.0)):
        offsets = close_offsets(count, window, rng)
        assert len(offsets) == count
        slot = window / count
        for index, at in enumerate(offsets):
            assert index * slot <= at <= (index + 1) * slot
    assert close_offsets(0, 10.0, rng) == []
    # Jittered: two drains of the same size do not close at the same moments.
    assert close_offsets(5, 10.0, rng) != close_offsets(5, 10.0, rng)


async def test_sigterm_drains_clients_spread_over_the_window(
    redis_url: str, tmp_path: Path
) -> None:
    async with gateway_process(redis_url, tmp_path / "gateway.log", WINDOW) as gateway:
        closing = await open_clients(gateway.ws_url, CLIENTS)
        leaver = await connect(gateway.ws_url, open_timeout=5, proxy=None)
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        gateway.process.send_signal(signal.SIGTERM)

        # Not ready at once, while the listener still answers; new handshakes refused.
        await eventually(lambda: draining(gateway.base), "/readyz 503", within=5)
        assert await handshake_status(gateway.ws_url) == 503
        assert await metric(gateway.base, "tickstream_gateway_draining") == 1
        # A client that leaves by itself during the drain is simply gone.
        await leaver.close()

        done = await asyncio.wait_for(asyncio.gather(*closing), WINDOW + EXIT_MARGIN)
        returncode = await asyncio.wait_for(gateway.process.wait(), EXIT_MARGIN)

    assert {(c.code, c.reason) for c in done} == {(1012, "service restart")}
    quarters = per_quarter([c.at for c in done], signalled, WINDOW)
    # Closing all at once puts every close in the first quarter; spread, each holds about a
    # quarter of them.
    assert max(quarters) <= 0.6 * CLIENTS, quarters
    assert returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]


async def test_a_second_sigterm_ends_the_drain_at_once(redis_url: str, tmp_path: Path) -> None:
    long_window = 300.0
    async with gateway_process(redis_url, tmp_path / "gateway.log", long_window) as gateway:
        closing = await open_clients(gateway.ws_url, 5)
        gateway.process.send_signal(signal.SIGTERM)
        await eventually(lambda: draining(gateway.base), "/readyz 503", within=5)
        gateway.process.send_signal(signal.SIGTERM)
        # Far sooner than the window: the second signal does not wait for the drain.
        await asyncio.wait_for(gateway.process.wait(), EXIT_MARGIN)
        done = await asyncio.wait_for(asyncio.gather(*closing), EXIT_MARGIN)
    assert all(c.code is not None for c in done), done
