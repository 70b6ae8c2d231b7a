"""The broker against a real Redis, with a recording handler instead of the hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable

import pytest
import redis.asyncio as aioredis

from services.gateway.broker import Broker
from services.gateway.errors import RedisLost
from shared.tasks import cancel_and_wait
from tests.gateway.conftest import eventually


class Recorder:
    """A BrokerHandler that remembers what it was told and resyncs at once."""

    def __init__(self) -> None:
        self.broker: Broker | None = None
        self.messages: list[tuple[bytes, bytes]] = []
        self.confirmed: set[bytes] = set()
        self.ups = 0
        self.downs = 0

    def on_message(self, name: bytes, data: bytes) -> None:
        self.messages.append((name, data))

    def on_confirmed(self, names: Iterable[bytes]) -> None:
        self.confirmed.update(names)

    async def on_up(self, names: Collection[bytes] | None) -> None:
        assert self.broker is not None and self.broker.connected
        self.ups += 1
        self.broker.health.recovered()

    def on_down(self, names: Collection[bytes] | None) -> None:
        self.downs += 1
        self.confirmed.clear()


@pytest.fixture
async def linked(redis_url: str) -> AsyncIterator[tuple[Broker, Recorder]]:
    recorder = Recorder()
    broker = Broker(redis_url, recorder, [b"events"])
    recorder.broker = broker
    broker.subscribe([b"early"])  # before any connection: carried by the first one
    broker.open()
    task = asyncio.create_task(broker.run())
    try:
        await eventually(lambda: broker.health.ok, "the broker's first resync")
        yield broker, recorder
    finally:
        await cancel_and_wait([task])
        await broker.close()
    assert not broker.health.ok  # closed: nobody watches Redis any more


async def test_channels_named_before_connecting_are_subscribed_and_confirmed(
    linked: tuple[Broker, Recorder], redis_client: aioredis.Redis
) -> None:
    broker, recorder = linked
    assert recorder.ups == 1 and recorder.downs == 0
    assert recorder.confirmed == {b"events", b"early"}
    broker.subscribe([b"later"])
    assert await broker.settle([b"later"]) == {b"later"}
    assert b"later" in recorder.confirmed
    broker.unsubscribe([b"early"])
    assert await broker.settle([b"later"]) == {b"later"}
    # Both unsubscribe and subscribe are in effect: "early" is no longer delivered.
    for name in (b"early", b"later", b"events"):
        await redis_client.publish(name, b"x-" + name)
    await eventually(lambda: len(recorder.messages) == 2, "two messages")
    assert recorder.messages == [(b"later", b"x-later"), (b"events", b"x-events")]


async def test_a_reported_failure_drops_the_connection_and_resyncs_a_new_one(
    linked: tuple[Broker, Recorder], redis_client: aioredis.Redis
) -> None:
    broker, recorder = linked
    told: list[bool] = []
    broker.health.on_fail.append(lambda: told.append(broker.health.ok))
    broker.health.on_recover.append(lambda: told.append(broker.health.ok))
    broker.failed(RedisLost("a user of Redis saw it fail"))
    await eventually(lambda: recorder.ups == 2, "the second resync")
    assert recorder.downs == 1 and told == [False, True]
    assert recorder.confirmed == {b"events", b"early"}  # everything subscribed again
    await redis_client.publish(b"early", b"again")
    await eventually(lambda: recorder.messages == [(b"early", b"again")], "a message")


async def test_no_barrier_without_a_connection(redis_url: str) -> None:
    broker = Broker(redis_url, Recorder())
    broker.subscribe([b"a"])  # remembered, nothing written
    assert not broker.connected and not await broker.settle([b"a"])
    assert not broker.health.ok
    with pytest.raises(RuntimeError):
        _ = broker.redis
