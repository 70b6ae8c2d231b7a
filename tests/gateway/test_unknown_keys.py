"""Only real instruments, and a bounded demand: a real gateway on port 0, real Redis, real
WebSocket clients. A key must be in the gateway's catalogue (the simulator's universe here, or
an instrument master file) to be subscribed; an unknown one is answered with `unknown_key` and
never reaches the replica's demand hash, which is what the ingestor subscribes upstream."""

from __future__ import annotations

from pathlib import Path

import orjson
import redis.asyncio as aioredis

from services.simulator.universe import universe
from shared.instruments import Mode
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    RELIANCE,
    GatewayHandle,
    StartGateway,
    client,
    demand_of,
    eventually,
    publish_tick,
)

NOSUCH = "NSE_FO|NOSUCH"
MADE_UP = ("NSE_EQ|INE999Z01011", "BSE_INDEX|Made Up", "NSE_FO|99999999")


async def test_unknown_keys_are_refused_and_the_known_ones_subscribed_and_delivered(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    replica = gateway.hub.replica_id
    async with client(gateway.ws_url) as c:
        request = {"op": "subscribe", "keys": [NIFTY, NOSUCH, *MADE_UP, BANK], "id": "u"}
        await c.send(request)
        error = await c.expect("error", id="u")
        assert error["code"] == "unknown_key" and error["keys"] == [NOSUCH, *MADE_UP]
        assert NOSUCH in error["message"]
        ack = await c.expect("ack", id="u")
        assert ack["keys"] == [NIFTY, BANK]
        await c.expect("initial_feed")
        await eventually(
            lambda: _demand_is(redis_client, replica, {NIFTY: "ltpc", BANK: "ltpc"}),
            "the demand of the known keys",
        )
        await publish_tick(redis_client, NIFTY, 1)
        assert await c.collect_until(NIFTY, 1) == [1]
        # A later subscribe of only unknown keys: an error, no ack, the demand unchanged.
        await c.send({"op": "subscribe", "keys": [NOSUCH], "mode": "full_d30", "id": "again"})
        error = await c.expect("error", id="again")
        assert error["code"] == "unknown_key" and error["keys"] == [NOSUCH]
        await c.send({"op": "snapshot", "keys": [NOSUCH, RELIANCE], "id": "snap"})
        unknown = await c.expect("error", id="snap")
        assert unknown["code"] == "unknown_key" and unknown["keys"] == [NOSUCH]
        missing = await c.expect("error", id="snap")
        assert missing["code"] == "not_subscribed" and missing["keys"] == [RELIANCE]
        await c.send({"op": "ping", "id": "p"})
        await c.expect("pong", id="p")  # every answer to the requests above has arrived
        assert [f for f in c.frames if f.get("type") == "ack" and f.get("id") == "again"] == []
    assert gateway.hub.stats.errors["unknown_key"] == 3
    assert not any(key in (NOSUCH, *MADE_UP) for _, key in gateway.hub.fanout.channels)


async def test_every_listed_instrument_may_be_subscribed(start_gateway: StartGateway) -> None:
    """Indices, equities on both exchanges, futures and every option strike the search offers."""
    gateway = await start_gateway(gateway_max_keys_per_client=5000)
    keys = [instrument.instrument_key for instrument in universe()]
    kinds = {instrument.instrument_type for instrument in universe()}
    assert kinds == {"INDEX", "EQ", "FUT", "CE", "PE"} and len(keys) > 1000
    async with client(gateway.ws_url) as c:
        for start in range(0, len(keys), 200):
            chunk = keys[start : start + 200]
            await c.send({"op": "subscribe", "keys": chunk, "id": start})
            ack = await c.expect("ack", id=start)
            assert ack["keys"] == chunk
    assert not gateway.hub.stats.errors


async def test_the_instrument_masters_keys_are_the_catalogue(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    master = tmp_path / "complete.json"
    records = [
        {"instrument_key": "NSE_FO|45450", "trading_symbol": "NIFTY 24000 CE", "segment": "NSE_FO"},
        {"instrument_key": NIFTY, "trading_symbol": "NIFTY", "segment": "NSE_INDEX"},
    ]
    master.write_bytes(orjson.dumps(records))
    gateway = await start_gateway(gateway_instruments_source=str(master))
    async with client(gateway.ws_url) as c:
        await c.send({"op": "subscribe", "keys": ["NSE_FO|45450", NIFTY, BANK], "id": "m"})
        error = await c.expect("error", id="m")
        assert error["code"] == "unknown_key" and error["keys"] == [BANK]  # not in this master
        assert (await c.expect("ack", id="m"))["keys"] == ["NSE_FO|45450", NIFTY]


async def test_without_a_catalogue_subscriptions_are_refused(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = await start_gateway(gateway_instruments_source=str(tmp_path / "missing.json"))
    async with client(gateway.ws_url) as c:
        await c.send({"op": "subscribe", "keys": [NIFTY], "id": "x"})
        error = await c.expect("error", id="x")
        assert error["code"] == "instruments_unavailable" and error["keys"] == [NIFTY]
        await c.send({"op": "ping", "id": "p"})
        await c.expect("pong", id="p")
        assert not [f for f in c.frames if f.get("type") == "ack"]
    assert not gateway.hub.fanout.channels


async def test_the_replicas_demand_stops_at_its_cap(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(gateway_max_demand_keys=2)
    replica = gateway.hub.replica_id
    async with client(gateway.ws_url) as first, client(gateway.ws_url) as second:
        await first.subscribe([NIFTY])
        await second.send({"op": "subscribe", "keys": [NIFTY, BANK, RELIANCE], "id": "c"})
        error = await second.expect("error", id="c")
        assert error["code"] == "capacity" and error["keys"] == [RELIANCE]
        assert (await second.expect("ack", id="c"))["keys"] == [NIFTY, BANK]
        await eventually(
            lambda: _demand_is(redis_client, replica, {NIFTY: "ltpc", BANK: "ltpc"}),
            "the demand at its cap",
        )
        # Full: a new key is refused, the subscriptions held are untouched, and a key already
        # in the demand may still be taken in another mode.
        await first.send({"op": "subscribe", "keys": [RELIANCE], "id": "full"})
        assert (await first.expect("error", id="full"))["code"] == "capacity"
        await first.send({"op": "subscribe", "keys": [BANK], "mode": "full", "id": "mode"})
        assert (await first.expect("ack", id="mode"))["keys"] == [BANK]
        await publish_tick(redis_client, NIFTY, 1)
        assert await first.collect_until(NIFTY, 1) == [1]
        await publish_tick(redis_client, BANK, 2, mode=Mode.FULL)
        # Room again once a key leaves the demand.
        await second.send({"op": "unsubscribe", "keys": [BANK], "id": "out"})
        await second.expect("ack", id="out")
        await first.send({"op": "unsubscribe", "keys": [BANK], "id": "out"})
        await first.expect("ack", id="out")
        await first.send({"op": "subscribe", "keys": [RELIANCE], "id": "room"})
        assert (await first.expect("ack", id="room"))["keys"] == [RELIANCE]
    assert gateway.hub.stats.errors["capacity"] == 2


async def _demand_is(redis: aioredis.Redis, replica: str, expected: dict[str, str]) -> bool:
    return await demand_of(redis, replica) == expected
