"""Gateway replicas as real servers on port 0, real WebSocket clients, ticks written to Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.app import create_app, server_options
from services.gateway.hub import Hub
from services.gateway.settings import GatewaySettings
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.resp import as_text
from tests.support.servers import RunningServer, running_server
from tests.support.waiting import eventually as wait_until

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"
RELIANCE = "NSE_EQ|INE002A01018"

# Short periods keep the suite fast; they bound how long things may take, tests never time them.
FAST: dict[str, Any] = {
    "gateway_flush_interval_ms": 5.0,
    "gateway_demand_lease_seconds": 3.0,
    "gateway_ping_interval_seconds": 5.0,
    "gateway_idle_timeout_seconds": 30.0,
    "gateway_close_timeout_seconds": 10.0,
    # The initial_feed right after the ack, keys without a value left out: what most tests
    # build on. The first-value wait has its own tests (test_first_values.py).
    "gateway_first_value_wait_ms": 0.0,
}
WAIT = 15.0  # upper bound for anything a test waits for


async def eventually(probe: Callable[[], object], what: str, within: float = WAIT) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `within` s."""
    return await wait_until(probe, what, within=within, interval=0.02)


@dataclass
class GatewayHandle:
    server: RunningServer
    app: FastAPI
    settings: GatewaySettings

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def ws_url(self) -> str:
        return f"{self.server.ws_url}/ws"


@contextlib.asynccontextmanager
async def running_gateway(redis_url: str, **overrides: Any) -> AsyncIterator[GatewayHandle]:
    """One replica on a free port, up and linked to Redis before the block starts."""
    settings = GatewaySettings(**{"redis_url": redis_url, **FAST, **overrides})
    app = create_app(settings)
    async with running_server(app, **server_options(settings)) as server:
        handle = GatewayHandle(server, app, settings)
        await eventually(lambda: handle.hub.redis_up, "the gateway's link to Redis")
        yield handle


StartGateway = Callable[..., Awaitable[GatewayHandle]]


@pytest.fixture
async def start_gateway(redis_url: str) -> AsyncIterator[StartGateway]:
    """Start replicas (settings overrides as keywords); all are stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> GatewayHandle:
            return await stack.enter_async_context(running_gateway(redis_url, **overrides))

        yield start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> GatewayHandle:
    return await start_gateway()


@dataclass
class Client:
    """A WebSocket client that decodes frames and can wait for a given kind."""

    ws: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)  # every frame received

    async def send(self, request: dict[str, Any] | str | bytes) -> None:
        if isinstance(request, dict):
            await self.ws.send(orjson.dumps(request).decode())
        else:
            await self.ws.send(request)

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            data = await self.ws.recv()
        frame: dict[str, Any] = orjson.loads(data)
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next frame of this type (and these field values), skipping others."""
        while True:
            frame = await self.recv()
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def subscribe(
        self, keys: list[str], mode: str = "ltpc", rid: str = "s"
    ) -> dict[str, Any]:
        """Subscribe and return the initial_feed that follows the ack."""
        await self.send({"op": "subscribe", "keys": keys, "mode": mode, "id": rid})
        ack = await self.expect("ack", id=rid)
        assert ack["keys"] == keys
        return await self.expect("initial_feed")

    def updates(self, key: str) -> list[int]:
        """The sequence numbers of `key` in live_feed frames received so far."""
        return [
            f["meta"][key]["seq"]
            for f in self.frames
            if f.get("type") == "live_feed" and key in f["meta"]
        ]

    async def collect_until(self, key: str, seq: int) -> list[int]:
        """Read until `key` reaches `seq` in a live_feed; returns its sequence numbers."""
        while not self.updates(key) or self.updates(key)[-1] < seq:
            await self.recv()
        return self.updates(key)


@contextlib.asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[Client]:
    async with connect(url, open_timeout=WAIT, **options) as ws:
        yield Client(ws)


async def publish_tick(
    redis: aioredis.Redis,
    key: str,
    seq: int,
    *,
    mode: Mode = Mode.LTPC,
    value: bytes | None = None,
    epoch: str = "e1",
    ts: int | None = None,
    store: bool = True,
) -> bytes:
    """What the ingestor does for one update: SET the last value and PUBLISH it, atomically."""
    value = (
        value if value is not None else b'{"ltpc":{"ltp":%d.5,"ltt":"1","ltq":"1","cp":1.0}}' % seq
    )
    payload = rc.encode_tick(value, seq, epoch, ts if ts is not None else int(time.time() * 1000))
    async with redis.pipeline(transaction=True) as pipe:
        if store:
            pipe.set(rc.last_value_key(mode, key), payload)
        pipe.publish(rc.tick_channel(mode, key), payload)
        await pipe.execute()
    return value


async def demand_of(redis: aioredis.Redis, replica: str) -> dict[str, str]:
    raw = await redis.hgetall(rc.demand_key(replica))
    return {as_text(k): as_text(v) for k, v in raw.items()}
