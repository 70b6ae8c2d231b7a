"""The publisher against a real Redis: batched publish + last values, market status, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.ingestor.processor import FrameResult, Tick
from services.ingestor.publisher import CHUNK, Publisher
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_client import connect_redis
from shared.redis_link import RedisLink
from shared.upstox.backoff import Backoff
from tests.ingestor.conftest import Listener
from tests.support.redis_server import ContainerRedisServer, LocalRedisServer
from tests.support.waiting import eventually


def tick(key: str, n: int, mode: Mode = Mode.LTPC) -> Tick:
    payload = rc.encode_tick(b'{"ltpc":{"ltp":%d.5}}' % n, n, "e1", 1_700_000_000_000 + n)
    return (
        rc.tick_channel(mode, key).encode(),
        rc.last_value_key(mode, key).encode(),
        payload,
        b"",
    )


class Harness:
    def __init__(self, url: str, ttl: int, instance: str = "me") -> None:
        self.link = RedisLink(connect_redis(url), Backoff(0.05, 0.2))
        self.latest: list[Tick] = []
        self.market_info: bytes | None = None
        self.publisher = Publisher(
            self.link,
            last_value_ttl=ttl,
            max_pending=100_000,
            latest=lambda: self.latest,
            latest_market_info=lambda: self.market_info,
            instance=instance,
        )
        self.link.on_recover.append(self.publisher.republish_all)
        self.tasks = [
            asyncio.create_task(self.publisher.run()),
            asyncio.create_task(self.link.run()),
        ]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.link.client.aclose()


@pytest.fixture
async def harness(redis_url: str) -> AsyncIterator[Harness]:
    h = Harness(redis_url, ttl=3600)
    yield h
    await h.close()


async def test_ticks_are_published_in_order_and_kept_as_last_values(
    harness: Harness, redis_url: str, redis_client: aioredis.Redis
) -> None:
    keys = [f"NSE_EQ|K{i:04d}" for i in range(CHUNK + 500)]  # more than one script call
    channel = rc.tick_channel(Mode.LTPC, keys[0])
    async with Listener(redis_url, [channel]) as ear:
        for n in range(1, 4):
            harness.publisher.submit(FrameResult(ticks=[tick(k, n) for k in keys], ts=1, feeds=1))
        await harness.publisher.idle()
        got = await ear.wait(channel, 3)
    assert got == [tick(keys[0], n)[2] for n in (1, 2, 3)]
    last = await redis_client.mget([rc.last_value_key(Mode.LTPC, k) for k in keys])
    assert last == [tick(k, 3)[2] for k in keys]
    assert 0 < await redis_client.ttl(rc.last_value_key(Mode.LTPC, keys[-1])) <= 3600
    assert harness.publisher.published == 3 * len(keys)
    assert harness.publisher.lag.total > 0
    assert sum(harness.publisher.lag.counts) == 3  # one observation per frame


async def test_nothing_is_published_while_another_instance_holds_the_lease(
    harness: Harness, redis_url: str, redis_client: aioredis.Redis
) -> None:
    channel, last = (
        rc.tick_channel(Mode.LTPC, "NSE_EQ|A1"),
        rc.last_value_key(Mode.LTPC, "NSE_EQ|A1"),
    )
    async with Listener(redis_url, [channel]) as ear:
        await redis_client.set(rc.INGESTOR_LEASE, "another")
        harness.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 1)]))
        await harness.publisher.idle()
        assert await redis_client.get(last) is None
        await redis_client.set(rc.INGESTOR_LEASE, "me")
        harness.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 2)]))
        await harness.publisher.idle()
        await eventually(lambda: tick("NSE_EQ|A1", 2)[2] in ear.on(channel), "the second tick")
        # Pub/sub keeps Redis's order: had the first gone out, it would be here before.
        assert ear.on(channel) == [tick("NSE_EQ|A1", 2)[2]]
    assert await redis_client.get(last) == tick("NSE_EQ|A1", 2)[2]


async def test_without_ttl_last_values_stay(redis_url: str, redis_client: aioredis.Redis) -> None:
    h = Harness(redis_url, ttl=0)
    try:
        h.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 1)]))
        await h.publisher.idle()
    finally:
        await h.close()
    assert await redis_client.ttl(rc.last_value_key(Mode.LTPC, "NSE_EQ|A1")) == -1


async def test_market_info_is_stored_and_announced(
    harness: Harness, redis_url: str, redis_client: aioredis.Redis
) -> None:
    status = b'{"type":"market_info","marketInfo":{"segmentStatus":{"NSE_EQ":"NORMAL_OPEN"}}}'
    async with Listener(redis_url, [rc.MARKET_INFO_EVENTS]) as ear:
        harness.publisher.submit(FrameResult(market_info=status))
        await harness.publisher.idle()
        assert await ear.wait(rc.MARKET_INFO_EVENTS, 1) == [status]
    assert await redis_client.get(rc.MARKET_INFO) == status


async def test_an_outage_sheds_ticks_then_republishes_the_latest(
    harness: Harness,
    redis_server: LocalRedisServer | ContainerRedisServer,
    redis_client: aioredis.Redis,
) -> None:
    harness.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 1)]))
    await harness.publisher.idle()
    redis_server.stop()
    try:
        harness.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 2)]))
        await eventually(lambda: not harness.link.ok, "the outage noticed")
        # Meanwhile nothing is queued; the processor's latest values are what counts.
        harness.publisher.submit(FrameResult(ticks=[tick("NSE_EQ|A1", 3)]))
        assert harness.publisher.backlog == 0
        harness.latest = [tick("NSE_EQ|A1", 3), tick("NSE_EQ|B2", 7)]
        harness.market_info = b'{"type":"market_info"}'
    finally:
        redis_server.start()
    await redis_client.connection_pool.disconnect()
    await eventually(lambda: harness.link.ok, "Redis back")
    await harness.publisher.idle()
    assert (
        await redis_client.get(rc.last_value_key(Mode.LTPC, "NSE_EQ|A1")) == tick("NSE_EQ|A1", 3)[2]
    )
    assert (
        await redis_client.get(rc.last_value_key(Mode.LTPC, "NSE_EQ|B2")) == tick("NSE_EQ|B2", 7)[2]
    )
    assert await redis_client.get(rc.MARKET_INFO) == b'{"type":"market_info"}'
    assert harness.publisher.shed >= 1
    assert harness.link.errors >= 1
