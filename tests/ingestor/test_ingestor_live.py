"""The ingestor against the simulator and a real Redis: demand, data, faults, takeover."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from google.protobuf.json_format import MessageToDict
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from services.ingestor.service import Ingestor
from shared import redis_contract as rc
from shared.feed_frames import live_frame
from shared.instruments import Mode
from shared.proto import pb
from shared.render import project
from shared.sessions import SessionStore
from shared.upstox.models import Profile, TokenResponse
from tests.ingestor.conftest import (
    USER,
    Listener,
    StartIngestor,
    connection_ids,
    put_demand,
    sample,
    upstream,
)
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually

EQ, IDX, EQ2 = "NSE_EQ|INE002A01018", "NSE_INDEX|Nifty 50", "NSE_EQ|INE009A01021"
LTPC, GREEKS, FULL = Mode.LTPC, Mode.OPTION_GREEKS, Mode.FULL


def meta(payload: bytes) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(rc.split_tick(payload)[1])
    return result


def value(payload: bytes) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(rc.split_tick(payload)[0])
    return result


async def connected(ingestor: Ingestor) -> Ingestor:
    await eventually(lambda: ingestor.upstream_connected, "upstream connected")
    return ingestor


async def test_subscriptions_follow_demand(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    await connected(await start_ingestor())

    await put_demand(redis_client, "gw-1", {EQ: {LTPC}})
    await eventually(lambda: upstream_is(simulator, {EQ: "ltpc"}), "EQ in ltpc")
    async with Listener(redis_url, [rc.tick_channel(FULL, EQ), rc.tick_channel(LTPC, EQ)]) as ear:
        await ear.wait(rc.tick_channel(LTPC, EQ), 2)

        # Another client wants full: upgraded upstream, both modes published.
        await put_demand(redis_client, "gw-1", {EQ: {LTPC, FULL}})
        await eventually(lambda: upstream_is(simulator, {EQ: "full"}), "EQ upgraded")
        full = await ear.wait(rc.tick_channel(FULL, EQ), 2)
        assert "marketFF" in value(full[-1])["fullFeed"]  # type: ignore[operator]
        ltpc_count = len(ear.on(rc.tick_channel(LTPC, EQ)))
        ltpc = await ear.wait(rc.tick_channel(LTPC, EQ), ltpc_count + 2)
        assert set(value(ltpc[-1])) == {"ltpc"}  # still the ltpc shape, projected from full

    # A second gateway adds the index; the first drops back to ltpc.
    await put_demand(redis_client, "gw-2", {IDX: {FULL}})
    await put_demand(redis_client, "gw-1", {EQ: {LTPC}})
    await eventually(
        lambda: upstream_is(simulator, {EQ: "ltpc", IDX: "full"}), "EQ downgraded, IDX added"
    )
    # Nobody wants EQ any more: unsubscribed.
    await put_demand(redis_client, "gw-1", {})
    await eventually(lambda: upstream_is(simulator, {IDX: "full"}), "EQ unsubscribed")


async def test_a_dead_gateways_demand_lapses(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    await connected(await start_ingestor())
    await put_demand(redis_client, "alive", {IDX: {LTPC}})
    await put_demand(redis_client, "dying", {EQ: {FULL}}, ttl_ms=1000)  # never renewed
    await eventually(lambda: upstream_is(simulator, {IDX: "ltpc", EQ: "full"}), "both")
    # No event announces a lease running out: the periodic rescan notices.
    await eventually(lambda: upstream_is(simulator, {IDX: "ltpc"}), "EQ dropped")


async def test_static_keys_are_always_subscribed(
    simulator: SimulatorHandle, logged_in: str, start_ingestor: StartIngestor
) -> None:
    await start_ingestor(ingestor_static_keys=[f"{IDX}:full", f"{EQ}"])
    await eventually(lambda: upstream_is(simulator, {IDX: "full", EQ: "ltpc"}), "static")


async def test_published_values_are_what_upstox_would_send(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    """Decode the simulator's frames independently (a second connection with the same
    subscription) and compare them with what the ingestor published for the same tick."""
    await connected(await start_ingestor())
    await put_demand(redis_client, "gw", {EQ: {FULL, LTPC}})
    await eventually(lambda: upstream_is(simulator, {EQ: "full"}), "EQ in full")

    frames: dict[int, pb.Feed] = {}
    async with (
        Listener(redis_url, [rc.tick_channel(FULL, EQ), rc.tick_channel(LTPC, EQ)]) as ear,
        own_feed(simulator, EQ, FULL) as own,
    ):

        async def read_own() -> None:
            async for message in own:
                frame = pb.FeedResponse.FromString(message)  # type: ignore[arg-type]
                if EQ in frame.feeds and frame.type == pb.live_feed:
                    frames[frame.currentTs] = frame.feeds[EQ]

        reader = asyncio.create_task(read_own())
        try:

            def matched() -> list[tuple[bytes, pb.Feed]]:
                return [
                    (payload, frames[int(meta(payload)["ts"])])  # type: ignore[call-overload]
                    for payload in ear.on(rc.tick_channel(FULL, EQ))
                    if int(meta(payload)["ts"]) in frames  # type: ignore[call-overload]
                ]

            await eventually(lambda: len(matched()) >= 5, "matched ticks")
            pairs = matched()
            # Snapshots: each mode's last value is a payload that was published on its channel.
            for mode in (FULL, LTPC):
                probe = functools.partial(_last_was_published, redis_client, ear, mode, EQ)
                await eventually(probe, f"{mode} snapshot")
                ttl = await redis_client.ttl(rc.last_value_key(mode, EQ))
                assert 0 < ttl <= 7 * 24 * 3600  # INGESTOR_LAST_VALUE_TTL_SECONDS
        finally:
            reader.cancel()
    for payload, feed in pairs:
        assert value(payload) == MessageToDict(feed)  # exactly the SDK's feeds[key]
        assert rc.split_tick(payload)[0] == project(feed, FULL)
    by_ts = {int(meta(p)["ts"]): p for p in ear.on(rc.tick_channel(LTPC, EQ))}  # type: ignore[call-overload]
    checked = 0
    for ts, feed in frames.items():
        if ts in by_ts:
            ltpc = MessageToDict(feed.fullFeed.marketFF.ltpc)
            assert value(by_ts[ts]) == {"ltpc": ltpc}
            assert rc.split_tick(by_ts[ts])[0] == project(feed, LTPC)
            checked += 1
    assert checked >= 3


async def test_protobuf_entries_go_out_only_where_upstoxs_wire_asks_for_them(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    await connected(await start_ingestor())
    await put_demand(redis_client, "gw", {EQ: {LTPC}}, entries={IDX: {FULL}})
    await eventually(lambda: upstream_is(simulator, {EQ: "ltpc", IDX: "full"}), "both keys")
    asked, unasked = rc.entry_channel(FULL, IDX), rc.entry_channel(LTPC, EQ)
    channels = [asked, unasked, rc.tick_channel(LTPC, EQ), rc.tick_channel(FULL, IDX)]
    async with Listener(redis_url, channels) as ear:
        await eventually(
            lambda: len(ear.on(asked)) >= 3 and len(ear.on(rc.tick_channel(LTPC, EQ))) >= 3,
            "entries for the index and ticks for the equity",
        )
    assert ear.on(unasked) == [] and ear.on(rc.tick_channel(FULL, IDX)) == []
    for payload in ear.on(asked):
        entry, _ = rc.split_entry(payload)
        feed = pb.FeedResponse.FromString(live_frame([entry], 1)).feeds[IDX]
        assert feed.fullFeed.HasField("indexFF")
    assert await redis_client.exists(rc.last_entry_key(FULL, IDX)) == 1
    assert await redis_client.exists(rc.last_entry_key(LTPC, EQ)) == 0
    assert await redis_client.exists(rc.last_value_key(FULL, IDX)) == 0


async def test_sequences_increase_and_a_reconnect_starts_a_new_epoch(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await connected(await start_ingestor())
    await put_demand(redis_client, "gw", {EQ: {LTPC}, IDX: {LTPC}})
    channel = rc.tick_channel(LTPC, EQ)
    async with Listener(redis_url, [channel, rc.tick_channel(LTPC, IDX)]) as ear:
        await ear.wait(channel, 5)
        first_epoch = ingestor.epoch
        before = await connection_ids(simulator)

        assert await simulator.drop_connections() == 1
        await eventually(
            lambda: _new_connection(simulator, before), "the ingestor to connect again"
        )
        # Everything demanded is subscribed again on the new connection, and flows.
        await eventually(lambda: upstream_is(simulator, {EQ: "ltpc", IDX: "ltpc"}), "resub")
        await eventually(
            lambda: sum(1 for p in ear.on(channel) if meta(p)["epoch"] != first_epoch) >= 3,
            "ticks of the new epoch",
        )
    epochs: dict[str, list[int]] = {}
    for payload in ear.on(channel):
        stamp = meta(payload)
        epochs.setdefault(str(stamp["epoch"]), []).append(int(stamp["seq"]))  # type: ignore[call-overload]
    assert list(epochs) == [first_epoch, ingestor.epoch] and ingestor.epoch != first_epoch
    for seqs in epochs.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # +1 each, nothing lost
    assert epochs[ingestor.epoch][0] == 1  # a new epoch counts from 1
    assert sample(ingestor, "upstream_reconnects_total") >= 1


async def test_two_ingestors_hold_one_connection_and_hand_over(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    first = await connected(await start_ingestor(ingestor_instance_id="first"))
    second = await start_ingestor(ingestor_instance_id="second")
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    await eventually(lambda: upstream_is(simulator, {IDX: "ltpc"}), "IDX subscribed")
    # The standby has had several lease rounds to (wrongly) connect; it must not have.
    for _ in range(5):
        assert len((await simulator.stats())["connections"]) == 1
        await asyncio.sleep(0.3)
    assert first.active and not second.active and second.state == "standby"
    assert sample(second, "upstream_connections_total") == 0
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"first"

    async with Listener(redis_url, [rc.tick_channel(LTPC, IDX)]) as ear:
        await first.stop()
        await connected(second)
        await eventually(lambda: upstream_is(simulator, {IDX: "ltpc"}), "resubscribed")
        await eventually(
            lambda: any(
                meta(p)["epoch"] == second.epoch for p in ear.on(rc.tick_channel(LTPC, IDX))
            ),
            "ticks from the second instance",
        )
    assert len((await simulator.stats())["connections"]) == 1
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"second"


async def test_a_crashed_active_instance_is_replaced_when_its_lease_lapses(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    first = await connected(await start_ingestor(ingestor_instance_id="first"))
    second = await start_ingestor(ingestor_instance_id="second")
    await put_demand(redis_client, "gw", {EQ: {FULL}})
    await eventually(lambda: upstream_is(simulator, {EQ: "full"}), "EQ subscribed")
    await first.abort()  # no lease release, like a killed process
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"first"
    await connected(second)
    await eventually(lambda: upstream_is(simulator, {EQ: "full"}), "resubscribed by second")
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"second"


async def test_a_quiet_feed_with_pongs_is_healthy(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await connected(
        await start_ingestor(ingestor_ping_interval=0.2, ingestor_ping_timeout=1.0)
    )
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    channel = rc.tick_channel(LTPC, IDX)
    async with Listener(redis_url, [channel]) as ear:
        await ear.wait(channel, 1)
        before = await connection_ids(simulator)
        await simulator.stall(2.0)  # no frames for 2 s: ten ping rounds, all answered
        seen = len(ear.on(channel))
        await ear.wait(channel, seen + 3)
    assert await connection_ids(simulator) == before
    assert sample(ingestor, "upstream_connections_total") == 1


async def test_malformed_frames_are_counted_and_skipped(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await connected(await start_ingestor())
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    channel = rc.tick_channel(LTPC, IDX)
    async with Listener(redis_url, [channel]) as ear:
        await ear.wait(channel, 1)
        before = await connection_ids(simulator)
        for _ in range(3):
            assert await simulator.send_malformed() == 1
        await eventually(lambda: sample(ingestor, "decode_errors_total") >= 3, "3 decode errors")
        seen = len(ear.on(channel))
        await ear.wait(channel, seen + 3)
    assert await connection_ids(simulator) == before  # the connection was kept


async def test_over_limit_demand_is_refused_visibly(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    await connected(await start_ingestor(ingestor_mode_limits={"full": 2}))
    keys = [EQ, EQ2, "NSE_EQ|INE040A01034"]
    async with Listener(redis_url, [rc.INGESTOR_EVENTS]) as ear:
        await put_demand(redis_client, "gw", {key: {FULL} for key in keys})
        refused = await eventually(lambda: redis_client.hgetall(rc.INGESTOR_REFUSED), "a refusal")
        assert list(refused) == [b"NSE_EQ|INE040A01034"]  # sorted order: the last key
        modes, reason = rc.decode_refusal(refused[b"NSE_EQ|INE040A01034"])
        assert modes == {FULL} and "limit of 2 keys in full mode" in reason
        await eventually(
            lambda: any(
                rc.IngestorStatus.model_validate_json(p).refused == 1
                for p in ear.on(rc.INGESTOR_EVENTS)
            ),
            "an ingestor event announcing it",
        )
    await eventually(lambda: upstream_is(simulator, {EQ: "full", EQ2: "full"}), "2 in full")
    # Demand shrinks: the refusal goes away.
    await put_demand(redis_client, "gw", {key: {FULL} for key in keys[1:]})
    await eventually(lambda: _no_refusals(redis_client), "the refusal withdrawn")
    await eventually(
        lambda: upstream_is(simulator, {EQ2: "full", "NSE_EQ|INE040A01034": "full"}),
        "the waiting key subscribed",
    )


async def test_without_a_token_it_waits_for_a_login(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await start_ingestor()
    await eventually(lambda: ingestor.state == "waiting_token", "waiting for a token")
    assert (await simulator.stats())["connections_total"] == 0
    await SessionStore(redis_client).save(
        TokenResponse.model_validate({"access_token": simulator.demo_token, "user_id": USER})
    )
    await connected(ingestor)


async def test_a_standby_reports_no_refused_keys(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await start_ingestor(ingestor_mode_limits={"full": 2})
    await connected(ingestor)
    await put_demand(redis_client, "gw", {key: {FULL} for key in (EQ, EQ2, IDX)})
    await eventually(lambda: sample(ingestor, "refused_keys") == 1, "one key refused")
    # Another instance takes the lease (as after a pause longer than it): this one stands by.
    await redis_client.set(rc.INGESTOR_LEASE, "someone-else", px=60_000)
    await eventually(lambda: sample(ingestor, "active") == 0, "the instance standing by")
    assert sample(ingestor, "refused_keys") == 0  # it plans nothing, so it refuses nothing


async def test_a_refused_token_is_marked_invalid_and_not_retried(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await connected(await start_ingestor())
    await simulator.expire_tokens()  # also closes the feed connection (1008)
    store = SessionStore(redis_client)
    await eventually(lambda: _invalid(store), "the session marked invalid")
    await eventually(lambda: ingestor.state == "waiting_token", "waiting for a new token")
    refused_calls = sample(ingestor, "authorize_calls_total", outcome="auth")
    connections = (await simulator.stats())["connections_total"]
    assert refused_calls == 1
    # Several recheck and backoff periods pass: no further attempt with the dead token.
    await asyncio.sleep(2.0)
    assert sample(ingestor, "authorize_calls_total", outcome="auth") == refused_calls
    assert (await simulator.stats())["connections_total"] == connections
    assert ingestor.state == "waiting_token"

    # A fresh login (through the simulator's OAuth dialog) brings the feed back.
    fresh = TokenResponse.model_validate(await simulator.login())
    await store.save(fresh)
    await connected(ingestor)
    assert len((await simulator.stats())["connections"]) == 1


async def test_redis_outage_keeps_upstream_and_recovers_by_itself(
    simulator: SimulatorHandle,
    redis_server: object,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    # An outage shorter than the lease: nobody can take it meanwhile, so the upstream stays.
    ingestor = await connected(
        await start_ingestor(ingestor_instance_id="solo", ingestor_lease_ttl_ms=60_000)
    )
    demand = {EQ: {FULL, LTPC}, IDX: {LTPC}}
    await put_demand(redis_client, "gw", demand)
    await eventually(lambda: upstream_is(simulator, {EQ: "full", IDX: "ltpc"}), "subscribed")
    await eventually(lambda: redis_client.exists(rc.last_value_key(LTPC, IDX)), "a last value")
    before = await connection_ids(simulator)
    frames_before = sample(ingestor, "frames_total")

    redis_server.stop()  # type: ignore[attr-defined]
    try:
        await eventually(lambda: not ingestor.redis_ok, "the outage noticed")
        # Upstream stays up and frames keep being decoded; nothing reaches Redis meanwhile.
        await eventually(
            lambda: sample(ingestor, "frames_total") > frames_before + 10, "frames flowing"
        )
        assert ingestor.upstream_connected
    finally:
        redis_server.start()  # type: ignore[attr-defined]

    # The restarted Redis is empty; a gateway writes its demand again, as gateways do.
    await eventually(lambda: ingestor.redis_ok, "Redis reachable again")
    await redis_client.connection_pool.disconnect()  # the test's own pooled sockets died too
    await put_demand(redis_client, "gw", demand)
    for mode, key in ((FULL, EQ), (LTPC, EQ), (LTPC, IDX)):
        name = rc.last_value_key(mode, key)
        await eventually(functools.partial(redis_client.exists, name), f"{name} republished")
    await eventually(lambda: redis_client.get(rc.INGESTOR_LEASE), "the lease retaken")
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"solo"
    async with Listener(redis_url, [rc.tick_channel(LTPC, IDX)]) as ear:
        await ear.wait(rc.tick_channel(LTPC, IDX), 3)
    assert await connection_ids(simulator) == before  # the same upstream connection throughout
    assert sample(ingestor, "redis_errors_total") >= 1
    assert await upstream(simulator) == {EQ: "full", IDX: "ltpc"}


async def test_an_outage_longer_than_the_lease_stops_streaming_until_redis_is_back(
    simulator: SimulatorHandle,
    redis_server: object,
    redis_client: aioredis.Redis,
    redis_url: str,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    # Unable to renew, the active cannot tell a Redis down for everyone from one it alone cannot
    # reach (where a standby takes over after the TTL): once the TTL has passed it stops.
    ingestor = await connected(await start_ingestor(ingestor_instance_id="solo"))
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    await eventually(lambda: upstream_is(simulator, {IDX: "ltpc"}), "subscribed")
    before, epoch = await connection_ids(simulator), ingestor.epoch

    redis_server.stop()  # type: ignore[attr-defined]
    try:
        await eventually(lambda: _no_connections(simulator), "the upstream dropped")
        assert not ingestor.active and ingestor.state == "standby"
    finally:
        redis_server.start()  # type: ignore[attr-defined]

    # The restarted Redis is empty: the login and the demand are stored again, as auth and the
    # gateways would store them.
    await redis_client.connection_pool.disconnect()
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    await connected(ingestor)
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"solo"
    async with Listener(redis_url, [rc.tick_channel(LTPC, IDX)]) as ear:
        ticks = await ear.wait(rc.tick_channel(LTPC, IDX), 1)
    assert meta(ticks[0])["epoch"] == ingestor.epoch != epoch
    assert await connection_ids(simulator) != before


# ---- helpers ---------------------------------------------------------------------------------


async def upstream_is(sim: SimulatorHandle, expected: dict[str, str]) -> bool:
    return await upstream(sim) == expected


async def _no_refusals(client: aioredis.Redis) -> bool:
    return not await client.hgetall(rc.INGESTOR_REFUSED)


async def _last_was_published(client: aioredis.Redis, ear: Listener, mode: Mode, key: str) -> bool:
    last = await client.get(rc.last_value_key(mode, key))
    return last is not None and last in ear.on(rc.tick_channel(mode, key))


async def _no_connections(sim: SimulatorHandle) -> bool:
    return not await connection_ids(sim)


async def _new_connection(sim: SimulatorHandle, before: list[int]) -> bool:
    now = await connection_ids(sim)
    return len(now) == 1 and now != before


async def _invalid(store: SessionStore) -> bool:
    session = await store.get(USER)
    return session is not None and not session.valid


@contextlib.asynccontextmanager
async def own_feed(sim: SimulatorHandle, key: str, mode: Mode) -> AsyncIterator[ClientConnection]:
    """A second, independent feed connection to the simulator with one subscription."""
    async with httpx.AsyncClient(base_url=sim.http_url) as client:
        answer = await client.get(
            "/v3/feed/market-data-feed/authorize",
            headers={"Authorization": f"Bearer {sim.demo_token}"},
        )
    url = answer.json()["data"]["authorized_redirect_uri"]
    async with ws_connect(url, compression=None) as ws:
        request = {
            "guid": "t",
            "method": "sub",
            "data": {"mode": mode.value, "instrumentKeys": [key]},
        }
        await ws.send(orjson.dumps(request))
        yield ws


async def test_a_logout_closes_the_feed_and_waits(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
) -> None:
    ingestor = await connected(await start_ingestor())
    assert await SessionStore(redis_client).delete(USER)
    await eventually(lambda: ingestor.state == "waiting_token", "waiting after the logout")
    await eventually(lambda: _no_connections(simulator), "the feed connection closed")


async def test_tokens_and_feed_urls_never_reach_the_logs(
    simulator: SimulatorHandle,
    redis_client: aioredis.Redis,
    logged_in: str,
    start_ingestor: StartIngestor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ingestor = await connected(await start_ingestor())
    await put_demand(redis_client, "gw", {IDX: {LTPC}})
    before = await connection_ids(simulator)
    await simulator.drop_connections()  # a reconnect: a second authorize, a second URL
    await eventually(lambda: _new_connection(simulator, before), "reconnected")
    await simulator.expire_tokens()  # and a refused token
    await eventually(lambda: ingestor.state == "waiting_token", "waiting for a token")
    ours = [
        record.getMessage()
        for record in caplog.records
        # the simulator's own records, and the test's admin calls, are not the ingestor's
        if not record.name.startswith(("services.simulator", "uvicorn"))
        and "/admin/" not in record.getMessage()
    ]
    assert any("connected to the feed" in line for line in ours)
    for line in ours:
        assert simulator.demo_token not in line
        assert "code=" not in line and "requestId=" not in line
        assert "market-data-feeder" not in line  # the one-time URL's path
