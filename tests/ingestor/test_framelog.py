"""The frame log against a real Redis: frames in the record stream, fenced, kept through outages;
and the live ingestor appending what the simulator sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.ingestor.framelog import FrameLog
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.proto import pb
from shared.redis_client import connect_redis
from shared.redis_link import RedisLink
from shared.upstox.backoff import Backoff
from tests.ingestor.conftest import StartIngestor, put_demand
from tests.support.redis_server import ContainerRedisServer, LocalRedisServer
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually

Entry = tuple[bytes, dict[bytes, bytes]]


class Harness:
    def __init__(self, url: str, instance: str = "me", buffer_bytes: int = 1 << 20) -> None:
        self.link = RedisLink(connect_redis(url), Backoff(0.05, 0.2))
        self.log = FrameLog(
            self.link, instance=instance, stream_bytes=1 << 20, buffer_bytes=buffer_bytes
        )
        self.tasks = [asyncio.create_task(self.log.run()), asyncio.create_task(self.link.run())]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.link.client.aclose()


@pytest.fixture
async def harness(redis_url: str) -> AsyncIterator[Harness]:
    h = Harness(redis_url)
    yield h
    await h.close()


def frame(n: int) -> bytes:
    response = pb.FeedResponse(type=pb.live_feed, currentTs=1_700_000_000_000 + n)
    response.feeds["NSE_EQ|INE002A01018"].ltpc.ltp = n + 0.5
    return response.SerializeToString()


async def entries(client: aioredis.Redis) -> list[Entry]:
    stored: list[Entry] = await client.xrange(rc.RECORD_STREAM)  # type: ignore[assignment]
    return stored


async def test_frames_are_appended_in_order_with_a_consecutive_counter(
    harness: Harness, redis_client: aioredis.Redis
) -> None:
    sent = [frame(n) for n in range(1, 301)]
    for n, data in enumerate(sent, start=1):
        harness.log.append(data, 1_700_000_000_000 + n)
    await harness.log.idle()
    stored = await entries(redis_client)
    assert [fields[b"f"] for _, fields in stored] == sent
    assert [int(fields[b"n"]) for _, fields in stored] == list(range(1, 301))
    assert {fields[b"i"] for _, fields in stored} == {b"me"}
    assert int(stored[0][1][b"t"]) == 1_700_000_000_001
    assert harness.log.appended == 300 and harness.log.dropped == 0


async def test_nothing_is_appended_while_another_instance_holds_the_lease(
    harness: Harness, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(rc.INGESTOR_LEASE, "someone-else")
    harness.log.append(frame(1), 1)
    await harness.log.idle()
    assert await entries(redis_client) == []
    assert harness.log.dropped == 1
    await redis_client.set(rc.INGESTOR_LEASE, "me")
    harness.log.append(frame(2), 2)
    await harness.log.idle()
    [(_, fields)] = await entries(redis_client)
    assert fields[b"n"] == b"2"  # the frame never appended shows as a gap


async def test_frames_wait_through_an_outage_and_go_out_in_order(
    harness: Harness,
    redis_server: LocalRedisServer | ContainerRedisServer,
    redis_client: aioredis.Redis,
) -> None:
    harness.log.append(frame(1), 1)
    await harness.log.idle()
    redis_server.stop()
    try:
        for n in range(2, 6):
            harness.log.append(frame(n), n)
        await eventually(lambda: not harness.link.ok, "the outage noticed")
        assert harness.log.backlog >= 1
    finally:
        redis_server.start()
    await redis_client.connection_pool.disconnect()
    await eventually(lambda: harness.log.backlog == 0, "the backlog sent")
    stored = await entries(redis_client)  # the restarted Redis lost the first frame
    assert [fields[b"f"] for _, fields in stored] == [frame(n) for n in range(2, 6)]
    assert harness.log.dropped == 0


async def test_past_its_buffer_the_oldest_frames_are_dropped_and_the_counter_shows_it(
    redis_url: str,
    redis_server: LocalRedisServer | ContainerRedisServer,
    redis_client: aioredis.Redis,
) -> None:
    size = len(frame(1))
    small = Harness(redis_url, buffer_bytes=3 * size)
    try:
        redis_server.stop()
        try:
            small.log.append(frame(1), 1)
            await eventually(lambda: not small.link.ok, "the outage noticed")
            for n in range(2, 9):
                small.log.append(frame(n), n)
        finally:
            redis_server.start()
        await redis_client.connection_pool.disconnect()
        await eventually(lambda: small.log.backlog == 0, "the backlog sent")
        counters = [int(fields[b"n"]) for _, fields in await entries(redis_client)]
        assert counters == [6, 7, 8]
        assert small.log.dropped == 5
    finally:
        await small.close()


async def test_the_stream_is_trimmed_to_its_byte_budget(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    link = RedisLink(connect_redis(redis_url), Backoff(0.05, 0.2))
    log = FrameLog(link, instance="me", stream_bytes=200 * 10_000, buffer_bytes=1 << 26)
    task = asyncio.create_task(log.run())
    try:
        big = b"\x08\x01" + b"\x00" * 9_998  # 10,000 bytes
        for n in range(2000):
            log.append(big, n)
        await log.idle()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.client.aclose()
    assert log.maxlen() == 200
    # MAXLEN ~ trims whole macro nodes only, so the stream may hold somewhat more.
    assert 200 <= await redis_client.xlen(rc.RECORD_STREAM) < 400


async def test_the_active_ingestor_appends_every_frame_it_receives(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await start_ingestor()
    await put_demand(redis_client, "gw", {"NSE_INDEX|Nifty 50": {Mode.LTPC}})
    await eventually(lambda: ingestor.upstream.frames >= 5, "frames received")
    assert ingestor.framelog is not None
    await eventually(
        lambda: ingestor.framelog is not None and ingestor.framelog.backlog == 0, "sent"
    )
    stored = await entries(redis_client)
    assert len(stored) >= 5
    kinds = [pb.FeedResponse.FromString(fields[b"f"]).type for _, fields in stored]
    assert kinds[0] == pb.market_info  # the first frame of a connection, as Upstox sends it
    counters = [int(fields[b"n"]) for _, fields in stored]
    assert counters == list(range(1, len(stored) + 1))
    assert {fields[b"i"].decode() for _, fields in stored} == {ingestor.instance}
    assert abs(int(stored[-1][1][b"t"]) / 1000 - time.time()) < 60
