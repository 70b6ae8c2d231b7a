"""The real-Redis harness: a clean database per test, and stop/start for fault tests."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.redis_server import ContainerRedisServer, LocalRedisServer


async def test_each_test_starts_empty(redis_client: aioredis.Redis) -> None:
    assert await redis_client.dbsize() == 0
    await redis_client.set("left-behind", "1")


async def test_previous_test_left_nothing(redis_client: aioredis.Redis) -> None:
    assert await redis_client.get("left-behind") is None


async def test_stop_and_start_again(
    redis_server: LocalRedisServer | ContainerRedisServer, redis_url: str
) -> None:
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.ping()
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        redis_server.start()
        assert await client.ping()
    finally:
        await client.aclose()
