"""The client protocol end to end: real gateway replicas, real Redis, real WebSocket clients.

Ticks are written to Redis the way the ingestor writes them (SET last value + PUBLISH).
"""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.simulator.universe import universe
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.gateway.conftest import (
    BANK,
    NIFTY,
    RELIANCE,
    Client,
    GatewayHandle,
    StartGateway,
    client,
    demand_of,
    eventually,
    publish_tick,
)
from tests.gateway.rawclient import RawClient

OPTIONS = [i.instrument_key for i in universe() if i.is_option]  # real keys, in the catalogue


def market_info(ts: str, status: str) -> bytes:
    return orjson.dumps(
        {
            "type": "market_info",
            "currentTs": ts,
            "marketInfo": {"segmentStatus": {"NSE_EQ": status}},
        }
    )


async def greeted(c: Client) -> dict[str, object]:
    return await c.expect("status")


# ---- greeting, snapshot, live updates -----------------------------------------------------


async def test_status_on_connect(gateway: GatewayHandle) -> None:
    async with client(gateway.ws_url) as c:
        status = await c.recv()
    assert status["type"] == "status"
    assert status["redis"] == "up"
    assert status["ingestor"] == "unknown"  # no ingestor reports in this test
    assert isinstance(status["message"], str) and status["message"]


async def test_snapshot_on_subscribe_then_live_updates_with_exact_values(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    stored = await publish_tick(redis_client, NIFTY, 41)  # before anybody listens
    async with client(gateway.ws_url) as c:
        await greeted(c)
        initial = await c.subscribe([NIFTY, BANK])
        assert initial["feeds"] == {NIFTY: json.loads(stored)}  # BANK has no value yet
        assert initial["meta"][NIFTY]["seq"] == 41 and initial["meta"][NIFTY]["epoch"] == "e1"
        assert int(initial["currentTs"]) > 0

        value = b'{"ltpc":{"ltp":22450.5,"ltt":"1740727891235","ltq":"75","cp":22300.1}}'
        await publish_tick(redis_client, NIFTY, 42, value=value, ts=1740727891300)
        await publish_tick(redis_client, BANK, 1)
        await c.collect_until(NIFTY, 42)
        await c.collect_until(BANK, 1)
    live = [f for f in c.frames if f["type"] == "live_feed"]
    nifty = next(f for f in live if NIFTY in f["feeds"])
    assert orjson.dumps(nifty["feeds"][NIFTY]) == orjson.dumps(orjson.loads(value))
    assert nifty["meta"][NIFTY] == {"seq": 42, "epoch": "e1", "ts": 1740727891300}
    assert c.updates(NIFTY) == [42] and c.updates(BANK) == [1]


async def test_each_mode_is_its_own_channel_and_a_key_switches_mode(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    full_value = b'{"fullFeed":{"indexFF":{"ltpc":{"ltp":1.0}}},"requestMode":"full_d5"}'
    async with client(gateway.ws_url) as c:
        await greeted(c)
        await c.subscribe([NIFTY], mode="ltpc", rid="a")
        assert await demand_of(redis_client, gateway.hub.replica_id) == {NIFTY: "ltpc"}
        initial = await c.subscribe([NIFTY], mode="full", rid="b")
        assert initial["feeds"] == {}
        assert await demand_of(redis_client, gateway.hub.replica_id) == {NIFTY: "full"}
        await publish_tick(redis_client, NIFTY, 1, mode=Mode.LTPC)  # no longer wanted
        await publish_tick(redis_client, NIFTY, 7, mode=Mode.FULL, value=full_value)
        await c.collect_until(NIFTY, 7)
    assert c.updates(NIFTY) == [7]
    frame = next(f for f in c.frames if f["type"] == "live_feed")
    assert frame["feeds"][NIFTY] == json.loads(full_value)


async def test_demand_is_written_under_a_lease_and_follows_every_change(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    replica = gateway.hub.replica_id
    events = redis_client.pubsub()
    await events.subscribe(rc.DEMAND_EVENTS)
    try:
        async with client(gateway.ws_url) as a, client(gateway.ws_url) as b:
            await greeted(a)
            await greeted(b)
            await a.subscribe([NIFTY, RELIANCE])
            await b.subscribe([NIFTY], mode="full")
            assert await demand_of(redis_client, replica) == {NIFTY: "full,ltpc", RELIANCE: "ltpc"}
            ttl = await redis_client.pttl(rc.demand_key(replica))
            assert 0 < ttl <= gateway.settings.gateway_demand_lease_seconds * 1000
            await a.send({"op": "unsubscribe", "keys": [RELIANCE], "id": "u"})
            assert (await a.expect("ack", id="u"))["keys"] == [RELIANCE]
            assert await eventually(
                lambda: _demand_is(redis_client, replica, {NIFTY: "full,ltpc"}), "RELIANCE gone"
            )
        # both clients left: nothing is wanted any more
        await eventually(lambda: _demand_is(redis_client, replica, {}), "an empty demand")
        announced = []
        while (message := await events.get_message(timeout=0.2)) is not None:
            if message["type"] == "message":
                announced.append(message["data"])
        assert announced and set(announced) == {replica.encode()}
    finally:
        await events.aclose()  # type: ignore[no-untyped-call]


async def _demand_is(redis: aioredis.Redis, replica: str, expected: dict[str, str]) -> bool:
    return await demand_of(redis, replica) == expected


async def test_the_lease_is_kept_alive_by_the_heartbeat(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(gateway_demand_lease_seconds=1.5)
    async with client(gateway.ws_url) as c:
        await greeted(c)
        await c.subscribe([NIFTY])
        key = rc.demand_key(gateway.hub.replica_id)
        writes = gateway.hub.demand.writes
        # Two lease periods later the hash is still there (kept by PEXPIRE, not rewritten).
        for _ in range(3):
            await asyncio.sleep(1.0)
            assert await demand_of(redis_client, gateway.hub.replica_id) == {NIFTY: "ltpc"}
            assert await redis_client.pttl(key) > 0
        assert gateway.hub.demand.writes == writes


async def test_snapshot_request_and_not_subscribed(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    async with client(gateway.ws_url) as c:
        await greeted(c)
        await c.subscribe([NIFTY, BANK])
        await publish_tick(redis_client, NIFTY, 3)
        await publish_tick(redis_client, BANK, 5)
        await c.collect_until(BANK, 5)
        await c.send({"op": "snapshot", "keys": [NIFTY, RELIANCE], "id": "snap"})
        error = await c.expect("error", id="snap")
        assert error["code"] == "not_subscribed" and error["keys"] == [RELIANCE]
        assert (await c.expect("ack", op="snapshot"))["keys"] == [NIFTY]
        fresh = await c.expect("initial_feed")
        assert set(fresh["feeds"]) == {NIFTY} and fresh["meta"][NIFTY]["seq"] == 3
        await c.send({"op": "snapshot", "id": "all"})
        assert (await c.expect("ack", id="all"))["keys"] == [NIFTY, BANK]
        everything = await c.expect("initial_feed")
        assert {k: m["seq"] for k, m in everything["meta"].items()} == {NIFTY: 3, BANK: 5}
        await c.send({"op": "unsubscribe", "keys": [RELIANCE, NIFTY], "id": "u"})
        error = await c.expect("error", id="u")
        assert error["code"] == "not_subscribed" and error["keys"] == [RELIANCE]
        assert (await c.expect("ack", id="u"))["keys"] == [NIFTY]


async def test_market_info_on_connect_and_on_change(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    first = market_info("1", "NORMAL_OPEN")
    second = market_info("2", "CLOSED")
    await redis_client.set(rc.MARKET_INFO, first)
    gateway = await start_gateway()
    async with client(gateway.ws_url) as c:
        assert await c.recv() == json.loads(first)
        await greeted(c)
        await redis_client.publish(rc.MARKET_INFO_EVENTS, second)
        assert await c.expect("market_info") == json.loads(second)


async def test_ingestor_state_is_reported(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    async with client(gateway.ws_url) as c:
        await greeted(c)
        status = rc.IngestorStatus(instance="i1", state="connected", epoch="E9")
        await redis_client.publish(rc.INGESTOR_EVENTS, status.model_dump_json())
        reported = await c.expect("status")
        assert reported["ingestor"] == "connected" and reported["redis"] == "up"
        await redis_client.publish(rc.INGESTOR_EVENTS, b"not json")  # ignored, no crash
        await c.send({"op": "ping", "id": 1})
        assert await c.expect("pong") == {"type": "pong", "id": 1}


async def test_keys_refused_upstream_are_reported(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    await redis_client.hset(
        rc.INGESTOR_REFUSED, NIFTY, rc.encode_refusal({Mode.FULL}, "full: 2000 keys at most")
    )
    status = rc.IngestorStatus(instance="i1", state="connected", refused=1)
    await redis_client.publish(rc.INGESTOR_EVENTS, status.model_dump_json())
    await eventually(lambda: NIFTY in gateway.hub.upstream.refused, "the refusal to be known")
    async with client(gateway.ws_url) as c:
        await greeted(c)
        await c.subscribe([NIFTY], mode="ltpc", rid="ok")  # ltpc is not refused
        await c.subscribe([NIFTY, BANK], mode="full", rid="r")
        error = await c.expect("error", code="refused_by_upstream")
        assert error["keys"] == [NIFTY] and error["id"] == "r"
        assert "2000 keys" in error["message"]
        # A refusal decided later reaches the clients that hold the key.
        await redis_client.hset(
            rc.INGESTOR_REFUSED, BANK, rc.encode_refusal({Mode.FULL}, "over the limit")
        )
        await redis_client.publish(rc.INGESTOR_EVENTS, status.model_dump_json())
        later = await c.expect("error", code="refused_by_upstream")
        assert later["keys"] == [BANK] and "id" not in later
    assert [f["code"] for f in c.frames if f["type"] == "error"] == ["refused_by_upstream"] * 2


# ---- two replicas -------------------------------------------------------------------------


async def test_two_replicas_deliver_the_same_updates(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    one = await start_gateway(gateway_replica_id="gw-one")
    two = await start_gateway(gateway_replica_id="gw-two")
    async with client(one.ws_url) as a, client(two.ws_url) as b:
        for c in (a, b):
            await greeted(c)
            await c.subscribe([NIFTY, RELIANCE], mode="full")
        assert await demand_of(redis_client, "gw-one") == {NIFTY: "full", RELIANCE: "full"}
        assert await demand_of(redis_client, "gw-two") == {NIFTY: "full", RELIANCE: "full"}
        for seq in range(1, 21):
            await publish_tick(redis_client, NIFTY, seq, mode=Mode.FULL)
            await publish_tick(redis_client, RELIANCE, seq, mode=Mode.FULL)
        for c in (a, b):
            await c.collect_until(NIFTY, 20)
            await c.collect_until(RELIANCE, 20)

    def values(c: Client) -> list[tuple[str, object, int]]:
        return [
            (key, f["feeds"][key], f["meta"][key]["seq"])
            for f in c.frames
            if f["type"] == "live_feed"
            for key in f["feeds"]
        ]

    assert values(a) == values(b)
    assert a.updates(NIFTY) == list(range(1, 21)) == b.updates(RELIANCE)
    assert one.hub.fanout.stats.delivered == two.hub.fanout.stats.delivered == 40


async def test_one_redis_subscription_per_channel_however_many_clients(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    async with client(gateway.ws_url) as a, client(gateway.ws_url) as b:
        for c in (a, b):
            await greeted(c)
            await c.subscribe([NIFTY, BANK])
        counts = await redis_client.pubsub_numsub(
            rc.tick_channel(Mode.LTPC, NIFTY), rc.tick_channel(Mode.LTPC, BANK)
        )
        assert [n for _, n in counts] == [1, 1]
        assert gateway.hub.fanout.subscription_count == 4
        await a.send({"op": "unsubscribe", "keys": [NIFTY, BANK], "id": "u"})
        await a.expect("ack", id="u")
        await b.send({"op": "unsubscribe", "keys": [NIFTY], "id": "u"})
        await b.expect("ack", id="u")

        async def nifty_unsubscribed() -> bool:
            counts = await redis_client.pubsub_numsub(
                rc.tick_channel(Mode.LTPC, NIFTY), rc.tick_channel(Mode.LTPC, BANK)
            )
            return [n for _, n in counts] == [0, 1]

        await eventually(nifty_unsubscribed, "NIFTY's channel to be released, BANK's kept")


# ---- bad input: clear errors, connection kept -----------------------------------------------


async def still_alive(c: Client) -> None:
    await c.send({"op": "ping", "id": "alive"})
    assert await c.expect("pong", id="alive")


async def test_every_bad_request_gets_its_error_and_the_connection_stays(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway_max_keys_per_client=3, gateway_max_ops_per_second=1000)
    async with client(gateway.ws_url) as c:
        await greeted(c)
        cases: list[tuple[str | bytes | dict[str, object], str]] = [
            ("not json", "bad_json"),
            ("[1,2]", "bad_request"),
            ({"op": "fly", "id": "x"}, "bad_request"),
            ({"op": "subscribe", "keys": "NSE_EQ|X", "id": "x"}, "bad_request"),
            ({"op": "subscribe", "keys": [NIFTY], "mode": "full_d5", "id": "x"}, "bad_mode"),
            ({"op": "subscribe", "keys": ["nope"], "id": "x"}, "bad_key"),
            ({"op": "subscribe", "keys": OPTIONS[:4]}, "too_many_keys"),
            ({"op": "unsubscribe", "keys": [NIFTY], "id": "x"}, "not_subscribed"),
            (b"\x00binary", "bad_request"),
        ]
        for request, code in cases:
            await c.send(request)
            error = await c.expect("error")
            assert error["code"] == code, (request, error)
            assert error["message"]
            await still_alive(c)
        # keys accumulate: 2 + 2 is over the limit of 3, the whole request is refused
        await c.subscribe([NIFTY, BANK], rid="two")
        await c.send({"op": "subscribe", "keys": [RELIANCE, OPTIONS[0]], "id": "more"})
        error = await c.expect("error", id="more")
        assert error["code"] == "too_many_keys" and error["keys"] == [RELIANCE, OPTIONS[0]]
        # a re-subscribe or a mode switch does not count as new keys
        await c.subscribe([NIFTY, BANK, RELIANCE], mode="full", rid="switch")
        assert set(gateway.hub.fanout.modes_of(NIFTY)) == {Mode.FULL}
    errors = gateway.hub.stats.errors
    assert errors is not None and errors["too_many_keys"] == 2 and errors["bad_json"] == 1


async def test_a_request_with_some_bad_keys_goes_ahead_for_the_good_ones(
    gateway: GatewayHandle,
) -> None:
    async with client(gateway.ws_url) as c:
        await greeted(c)
        await c.send({"op": "subscribe", "keys": [NIFTY, "bad|key", BANK], "id": "m"})
        error = await c.expect("error", id="m")
        assert error["code"] == "bad_key" and error["keys"] == ["bad|key"]
        ack = await c.expect("ack", id="m")
        assert ack["keys"] == [NIFTY, BANK] and ack["mode"] == "ltpc"
        await c.expect("initial_feed")


async def test_rate_limit_names_the_dropped_requests_and_recovers(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway_max_ops_per_second=5)
    async with client(gateway.ws_url) as c:
        await greeted(c)
        for n in range(30):
            await c.send({"op": "subscribe", "keys": [OPTIONS[n]], "id": n})
        # After a pause the bucket refills and requests are served again.
        await asyncio.sleep(1.5)
        await c.send({"op": "ping", "id": "after"})
        await c.expect("pong", id="after")
    acked = [f["id"] for f in c.frames if f["type"] == "ack"]
    refused = [f for f in c.frames if f["type"] == "error"]
    assert acked[:5] == [0, 1, 2, 3, 4]  # the burst allowance, in order
    assert refused and all(f["code"] == "rate_limited" for f in refused)
    # Each notice names the dropped request, so the client can send it again ...
    assert all(f["keys"] == [OPTIONS[f["id"]]] and f["id"] not in acked for f in refused)
    # ... but a flood gets no more notices than the rate allows, not one per request.
    assert len(acked) + len(refused) < 30
    errors_by_code = gateway.hub.stats.errors
    assert errors_by_code is not None and errors_by_code["rate_limited"] == len(refused)


async def test_a_frame_over_the_size_limit_closes_with_1009(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway_max_message_bytes=1024)
    async with client(gateway.ws_url, max_size=None) as c:
        await greeted(c)
        fits = orjson.dumps({"op": "subscribe", "keys": [NIFTY] * 20, "pad": "x" * 500})
        assert 900 < len(fits) <= 1024
        await c.send(fits.decode())
        await c.expect("ack")
        await c.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await c.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await eventually(lambda: gateway.hub.stats.oversize_closed == 1, "the 1009 to be counted")
    await eventually(lambda: not gateway.hub.clients, "the client to be forgotten")


async def test_an_oversize_close_reaches_a_client_still_sending(
    start_gateway: StartGateway,
) -> None:
    """The gateway fails the connection at the frame header, with the rest of the message
    still arriving: a close that dropped the socket with unread data would send a TCP reset,
    which can discard the 1009 on its way (a proxy in between then reports 1012). A half-close
    lets the close frame and an orderly end of stream reach the client."""
    gateway = await start_gateway(gateway_max_message_bytes=1024)
    raw = await RawClient.connect(gateway.ws_url)
    try:
        await raw.read_until(lambda c: bool(c.frames))  # greeted
        announced = 4 * 1024 * 1024
        header = bytes([0x81, 0x80 | 127]) + announced.to_bytes(8, "big") + b"\0\0\0\0"
        await raw.send_bytes(header + bytes(512 * 1024))  # a zero mask: the payload as is
        await raw.read_until_closed()  # a reset raises ConnectionResetError here
    finally:
        raw.close()
    assert raw.close_code == 1009 and raw.eof
    await eventually(lambda: not gateway.hub.clients, "the client to be forgotten")


# ---- who may connect ----------------------------------------------------------------------


async def test_origins(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway_allowed_origins=["https://dash.example"])
    own = f"http://127.0.0.1:{gateway.server.port}"
    for origin in (own, "https://dash.example"):
        async with client(gateway.ws_url, origin=origin) as c:
            assert (await c.recv())["type"] == "status"
    async with client(gateway.ws_url, origin="https://evil.example") as c:
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "origin not allowed")
    rejected = gateway.hub.stats.rejected
    assert rejected is not None and rejected["origin"] == 1 and not gateway.hub.clients


async def test_api_keys(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway_api_keys=["key-one", "key-two"])
    async with client(gateway.ws_url) as c:
        error = await c.recv()
        assert error["type"] == "error" and error["code"] == "unauthorized"
        with pytest.raises(ConnectionClosed) as closed:
            await c.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with client(gateway.ws_url + "?api_key=wrong") as c:
        assert (await c.recv())["code"] == "unauthorized"
    async with client(gateway.ws_url + "?api_key=key-two") as c:
        assert (await c.recv())["type"] == "status"
    headers = {"Authorization": "Bearer key-one"}
    async with client(gateway.ws_url, additional_headers=headers) as c:
        assert (await c.recv())["type"] == "status"


async def test_no_websocket_outside_ws(gateway: GatewayHandle) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with client(gateway.ws_url.removesuffix("/ws") + "/elsewhere"):
            pass
    assert refused.value.response.status_code == 404


# ---- keepalive, idle clients, shutdown ----------------------------------------------------


async def test_pings_are_sent_and_a_silent_client_is_closed_4001(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        gateway_ping_interval_seconds=0.2, gateway_idle_timeout_seconds=1.0
    )
    raw = await RawClient.connect(gateway.ws_url)
    try:
        # Never answering, the client is dropped; what it then reads shows pings and the close.
        await eventually(lambda: gateway.hub.stats.idle_dropped == 1, "the idle client dropped")
        await raw.read_until_closed()
    finally:
        raw.close()
    assert raw.pings >= 2
    assert (raw.close_code, raw.close_reason) == (4001, "idle timeout")


async def test_a_client_that_answers_pings_stays(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(
        gateway_ping_interval_seconds=0.2, gateway_idle_timeout_seconds=1.0
    )
    async with client(gateway.ws_url) as c:  # websockets answers pings by itself
        await greeted(c)
        await asyncio.sleep(2.5)
        await still_alive(c)
    assert gateway.hub.stats.idle_dropped == 0


async def test_shutdown_closes_clients_with_1001(redis_url: str) -> None:
    from tests.gateway.conftest import running_gateway

    async with running_gateway(redis_url) as gateway, client(gateway.ws_url) as c:
        await greeted(c)
        gateway.server.server.should_exit = True
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await c.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
