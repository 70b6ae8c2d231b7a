"""Fixtures for the auth, session-store and Upstox-client tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from shared.redis_contract import TOKEN_EVENTS, TokenEvent


@dataclass
class TokenEvents:
    """A live subscription to the token-event channel."""

    pubsub: aioredis.client.PubSub
    publisher: aioredis.Redis

    async def next(self) -> TokenEvent:
        async with asyncio.timeout(10):
            while True:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    return TokenEvent.model_validate_json(message["data"])

    async def assert_quiet(self) -> None:
        """Nothing was published before now: a marker we publish must be the next event.

        Redis runs commands one at a time, so anything published before the marker arrives
        before it; no waiting for an absence is needed.
        """
        marker = TokenEvent(event="logout", user_id="__marker__")
        await self.publisher.publish(TOKEN_EVENTS, marker.model_dump_json())
        assert await self.next() == marker


@pytest.fixture
async def token_events(redis_client: aioredis.Redis) -> AsyncIterator[TokenEvents]:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(TOKEN_EVENTS)
    # Wait for the subscription to be in place so no event is published before it.
    async with asyncio.timeout(10):
        while await pubsub.get_message(timeout=1) is None:
            pass
    yield TokenEvents(pubsub, redis_client)
    await pubsub.unsubscribe()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
