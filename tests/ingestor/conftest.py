"""Fixtures for the ingestor tests: the simulator as upstream, real Redis, ingestors in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.ingestor.service import Ingestor
from services.ingestor.settings import IngestorSettings
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_client import queue_publish
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.support.simulator import SimulatorHandle, simulator  # noqa: F401
from tests.support.waiting import eventually

USER = "TS0001"

# Short periods keep the suite fast; they bound how long things take, tests never time them.
FAST: dict[str, Any] = {
    "ingestor_lease_ttl_ms": 1500,
    "ingestor_demand_rescan_seconds": 0.25,
    "ingestor_backoff_initial": 0.05,
    "ingestor_backoff_max": 0.5,
    "ingestor_ping_interval": 1.0,
    "ingestor_ping_timeout": 2.0,
    "ingestor_stable_after_seconds": 1.0,
    "ingestor_demand_grace_seconds": 2.0,
}


def sample(ingestor: Ingestor, name: str, **labels: str) -> float:
    """The value of one of the ingestor's metrics as a scrape would show it (0 if absent)."""
    found = ingestor.metrics.get_sample_value("tickstream_ingestor_" + name, labels)
    return found or 0.0


async def put_demand(
    client: aioredis.Redis,
    replica: str,
    table: dict[str, set[Mode]],
    ttl_ms: int = 60_000,
    *,
    entries: dict[str, set[Mode]] | None = None,
) -> None:
    """Write a replica's demand hash and registry entry the way a gateway does, and announce
    it: `table` on our JSON wire, `entries` on Upstox's."""
    entries = entries or {}
    values = {
        key: rc.encode_demand(
            rc.WireModes(frozenset(table.get(key, ())), frozenset(entries.get(key, ())))
        )
        for key in table.keys() | entries.keys()
    }
    key = rc.demand_key(replica)
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if values:
            pipe.hset(key, mapping=values)  # type: ignore[arg-type]
            pipe.pexpire(key, ttl_ms)
        pipe.zadd(rc.DEMAND_REGISTRY, {replica: int(time.time() * 1000) + ttl_ms})
        queue_publish(pipe, rc.DEMAND_EVENTS, replica)
        await pipe.execute()


def ticks(*modes: Mode) -> rc.WireModes:
    """Demand for JSON ticks alone, as `read_demand` reports it."""
    return rc.WireModes(frozenset(modes), frozenset())


async def upstream(sim: SimulatorHandle) -> dict[str, str]:
    """Key -> mode subscribed on the simulator, over all of its feed connections."""
    stats = await sim.stats()
    merged: dict[str, str] = {}
    for connection in stats["connections"]:
        merged.update(connection["subscriptions"])
    return merged


async def connection_ids(sim: SimulatorHandle) -> list[int]:
    return [int(connection["id"]) for connection in (await sim.stats())["connections"]]


class Listener:
    """A real Redis subscriber collecting (channel, payload) in arrival order.

    It polls with a short timeout and stops on a flag rather than by cancellation: redis-py's
    asyncio client can swallow a CancelledError that lands mid-read.
    """

    def __init__(self, url: str, channels: Iterable[str]) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(url)
        self._channels = list(channels)
        self.messages: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    async def __aenter__(self) -> Listener:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*self._channels)
        self._task = asyncio.create_task(self._collect(pubsub))
        return self

    async def _collect(self, pubsub: Any) -> None:
        try:
            while not self._stop:
                message = await pubsub.get_message(timeout=0.1)
                if message is not None:
                    self.messages.append((message["channel"].decode(), message["data"]))
        finally:
            await pubsub.aclose()

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        await self._client.aclose()

    def on(self, channel: str) -> list[bytes]:
        return [payload for name, payload in self.messages if name == channel]

    async def wait(self, channel: str, count: int) -> list[bytes]:
        await eventually(lambda: len(self.on(channel)) >= count, f"{count} messages on {channel}")
        return self.on(channel)


@pytest.fixture
async def logged_in(redis_client: aioredis.Redis, simulator: SimulatorHandle) -> str:  # noqa: F811
    """The simulator's demo token stored as the active session, as auth would store it."""
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    return USER


StartIngestor = Callable[..., Awaitable[Ingestor]]


@pytest.fixture
async def start_ingestor(
    redis_url: str,
    simulator: SimulatorHandle,  # noqa: F811
) -> AsyncIterator[StartIngestor]:
    """Start ingestors in-process against the simulator; all are stopped at the end."""
    started: list[Ingestor] = []

    async def start(**overrides: Any) -> Ingestor:
        options = {
            "redis_url": redis_url,
            "upstox_base_url": simulator.http_url,
            **FAST,
            **overrides,
        }
        ingestor = Ingestor(IngestorSettings(**options))
        started.append(ingestor)
        await ingestor.start()
        return ingestor

    yield start
    for ingestor in started:
        if ingestor.state != "stopped":
            await ingestor.stop()
