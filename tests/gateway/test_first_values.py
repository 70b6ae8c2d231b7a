"""A real first snapshot: a subscribed key with no value yet gets its first value as its
`initial_feed` (within GATEWAY_FIRST_VALUE_WAIT_MS), keys with values are not held back, and a
key still without one when the wait ends comes live. A real gateway, a real Redis."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from shared import redis_contract as rc
from shared.instruments import Mode
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    RELIANCE,
    Client,
    StartGateway,
    client,
    eventually,
    publish_tick,
)

LONG = {"gateway_first_value_wait_ms": 60_000.0}  # longer than any test waits: never reached


def feeds(c: Client) -> list[tuple[str, dict[str, int]]]:
    """Every feed frame so far: its type and each key's sequence number."""
    return [
        (f["type"], {k: m["seq"] for k, m in f["meta"].items()})
        for f in c.frames
        if f["type"] in ("initial_feed", "live_feed")
    ]


async def next_feed(c: Client) -> dict[str, Any]:
    while True:
        frame = await c.recv()
        if frame["type"] in ("initial_feed", "live_feed"):
            return frame


async def test_a_first_value_published_after_the_subscribe_is_the_initial_feed(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(**LONG)
    fan = gateway.hub.fanout
    await publish_tick(redis_client, NIFTY, 7)  # NIFTY has a value, BANK and RELIANCE none
    async with client(gateway.ws_url) as c:
        # Keys with values are not held back by keys without.
        initial = await c.subscribe([NIFTY, BANK])
        assert {key: meta["seq"] for key, meta in initial["meta"].items()} == {NIFTY: 7}
        await eventually(lambda: fan.stats.first_value_waits == 1, "BANK to wait")
        await publish_tick(redis_client, BANK, 1)
        await publish_tick(redis_client, NIFTY, 8)
        await publish_tick(redis_client, BANK, 2)
        await c.collect_until(BANK, 2)
        await c.collect_until(NIFTY, 8)

        # With no value at all, the initial_feed itself waits for the first one.
        await c.send({"op": "subscribe", "keys": [RELIANCE], "id": "r"})
        await c.expect("ack", id="r")
        await eventually(lambda: fan.stats.first_value_waits == 2, "RELIANCE to wait")
        await publish_tick(redis_client, RELIANCE, 1)
        first = await next_feed(c)
        assert first["type"] == "initial_feed" and first["meta"][RELIANCE]["seq"] == 1
        await publish_tick(redis_client, RELIANCE, 2)
        await c.collect_until(RELIANCE, 2)
    nifty, bank, reliance = (
        [(kind, seqs[key]) for kind, seqs in feeds(c) if key in seqs]
        for key in (NIFTY, BANK, RELIANCE)
    )
    assert nifty == [("initial_feed", 7), ("live_feed", 8)]
    assert bank == [("initial_feed", 1), ("live_feed", 2)]
    assert reliance == [("initial_feed", 1), ("live_feed", 2)]
    assert fan.stats.first_value_misses == 0


async def test_a_key_without_a_value_when_the_wait_ends_comes_live(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(gateway_first_value_wait_ms=200.0)
    async with client(gateway.ws_url) as c:
        initial = await c.subscribe([BANK])  # sent when the wait ends, with nothing in it
        assert initial["feeds"] == {}
        await publish_tick(redis_client, BANK, 1)
        await c.collect_until(BANK, 1)
    assert feeds(c) == [("initial_feed", {}), ("live_feed", {BANK: 1})]
    stats = gateway.hub.fanout.stats
    assert stats.first_value_waits == 1 and stats.first_value_misses == 1


async def test_a_key_the_ingestor_refuses_does_not_wait(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(**LONG)
    await redis_client.hset(rc.INGESTOR_REFUSED, NIFTY, rc.encode_refusal({Mode.FULL}, "limit"))
    status = rc.IngestorStatus(instance="i1", state="connected", refused=1)
    await redis_client.publish(rc.INGESTOR_EVENTS, status.model_dump_json())
    await eventually(lambda: NIFTY in gateway.hub.upstream.refused, "the refusal to be known")
    async with client(gateway.ws_url) as c:
        # No value will come: the initial_feed is not held for it (the wait is 60 s).
        assert (await c.subscribe([NIFTY], mode="full"))["feeds"] == {}
        await c.expect("error", code="refused_by_upstream")
    assert gateway.hub.fanout.stats.first_value_waits == 0
