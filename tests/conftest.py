"""Session-wide fixtures: a real Redis server and a clean database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import ContainerRedisServer, LocalRedisServer, session_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedisServer | ContainerRedisServer]:
    """One real Redis for the whole session; tests that stop it must start it again."""
    with session_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: LocalRedisServer | ContainerRedisServer) -> Iterator[str]:
    """The URL of a Redis that is up and empty at the start of the test."""
    import redis as sync_redis

    try:
        sync_redis.Redis.from_url(redis_server.url).ping()
    except sync_redis.ConnectionError:
        redis_server.start()  # a previous fault test left it stopped
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
