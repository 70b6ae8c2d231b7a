"""The ingestor, its demand discovery and auth against a real Redis Cluster.

Ticks must land on the master owning each instrument's slot, as SPUBLISH on that node and a last
value there, and keep landing while a slot moves; demand is found through the registry, not
SCAN (which would see one node); auth's MULTI transactions (session, active pointer, token
event) must stay in one slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.ingestor.demand import REGISTRY_SWEEP_AFTER_MS, read_demand
from services.ingestor.processor import FrameResult
from services.ingestor.publisher import Publisher
from services.ingestor.service import Ingestor
from services.ingestor.settings import IngestorSettings
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.redis_client import connect_redis
from shared.redis_link import RedisLink
from shared.sessions import SessionStore
from shared.upstox.backoff import Backoff
from shared.upstox.models import Profile
from tests.auth.conftest import REDIRECT_URI, auth_settings, listening, running_auth
from tests.ingestor.conftest import FAST, USER, put_demand, ticks, upstream
from tests.support.redis_cluster import ClusterNode, RedisClusterHarness
from tests.support.simulator import SimulatorHandle, login_via_dialog, simulator  # noqa: F401
from tests.support.waiting import eventually

# Instruments whose slots are served by different masters of a fresh cluster (checked below).
KEYS = ["NSE_EQ|INE002A01018", "NSE_INDEX|Nifty 50", "NSE_EQ|INE009A01021", "NSE_INDEX|Nifty Bank"]
LTPC = Mode.LTPC


@pytest.fixture
async def cluster_client(cluster_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(cluster_url, cluster=True)
    await client.ping()  # redis-py's cluster pub/sub needs the slot map a command loads
    yield client
    await client.aclose()


@pytest.fixture
async def ingestor(
    cluster_url: str,
    cluster_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> AsyncIterator[Ingestor]:
    await SessionStore(cluster_client).save(Profile(user_id=USER), simulator.demo_token)
    options: dict[str, Any] = {
        "redis_url": cluster_url,
        "redis_cluster": True,
        "upstox_base_url": simulator.http_url,
        **FAST,
    }
    started = Ingestor(IngestorSettings(**options))
    await started.start()
    await eventually(lambda: started.upstream_connected, "upstream connected")
    yield started
    await started.stop()


def owner(cluster: RedisClusterHarness, key: str) -> ClusterNode:
    return cluster.slot_owner(cluster.key_slot(rc.last_value_key(LTPC, key)))


async def last_value(node: ClusterNode, key: str) -> bytes | None:
    """`key`'s last value on `node`; ASKING first, so an importing node answers too."""
    client = aioredis.Redis.from_url(node.url, single_connection_client=True)
    try:
        await client.execute_command("ASKING")  # type: ignore[no-untyped-call]
        value = await client.get(rc.last_value_key(LTPC, key))
        return value if isinstance(value, bytes) else None
    finally:
        await client.aclose()


async def sharded_messages(node: ClusterNode, key: str, count: int) -> list[bytes]:
    """`count` ticks received by SSUBSCRIBE on `node` (a plain client of that node alone)."""
    client = aioredis.Redis.from_url(node.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    received: list[bytes] = []
    try:
        await pubsub.ssubscribe(rc.tick_channel(LTPC, key))
        async with asyncio.timeout(30):
            while len(received) < count:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    received.append(message["data"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    return received


async def test_ticks_land_on_the_master_owning_each_instrument(
    redis_cluster: RedisClusterHarness, cluster_client: aioredis.Redis, ingestor: Ingestor
) -> None:
    owners = {key: owner(redis_cluster, key) for key in KEYS}
    assert len({node.port for node in owners.values()}) >= 2  # the batch really is split
    await put_demand(cluster_client, "gw-1", {key: {LTPC} for key in KEYS})

    for key, node in owners.items():
        ticks = await sharded_messages(node, key, 2)
        assert all(rc.split_tick(tick)[0] for tick in ticks)
        await eventually(functools.partial(last_value, node, key), f"last value of {key}")
        for other in redis_cluster.masters():
            with other.client() as direct:  # KEYS lists the node's own keys, never redirects
                held = direct.keys(rc.last_value_key(LTPC, key).replace("[", "\\["))
            assert bool(held) == (other is node)


async def test_ticks_keep_landing_while_a_slot_moves(
    redis_cluster: RedisClusterHarness, cluster_client: aioredis.Redis, ingestor: Ingestor
) -> None:
    key = KEYS[0]
    await put_demand(cluster_client, "gw-1", {key: {LTPC}})
    source = owner(redis_cluster, key)
    await eventually(lambda: last_value(source, key), "a first last value")
    slot = redis_cluster.key_slot(rc.last_value_key(LTPC, key))
    target = next(node for node in redis_cluster.masters() if node is not source)

    # Migrating: the source answers ASK for the keys it gave away; the ticks follow them.
    redis_cluster.begin_slot_move(slot, target)
    redis_cluster.migrate_keys(slot, source, target)
    moved = await last_value(target, key)
    await eventually(lambda: _changed(target, key, moved), "a tick written on the importing master")
    # Moved: the ingestor's slot map is stale; MOVED sends the next calls to the new owner.
    redis_cluster.finish_slot_move(slot, target)
    assert await sharded_messages(target, key, 2)
    published = ingestor.publisher.published
    await eventually(lambda: ingestor.publisher.published > published + 2, "still publishing")
    assert ingestor.publisher.shed == 0


async def test_without_the_lease_proof_nothing_is_published(
    redis_cluster: RedisClusterHarness, cluster_client: aioredis.Redis
) -> None:
    proven = False
    link = RedisLink(cluster_client, Backoff(0.05, 0.2))
    publisher = Publisher(
        link,
        last_value_ttl=0,
        max_pending=1000,
        latest=list,
        latest_market_info=lambda: None,
        lease_proven=lambda: proven,
    )
    runner = asyncio.create_task(publisher.run())
    ticks = [
        (rc.tick_channel(LTPC, k).encode(), rc.last_value_key(LTPC, k).encode(), b"{}", b"")
        for k in KEYS
    ]
    try:
        publisher.submit(FrameResult(ticks=ticks))
        await publisher.idle()
        assert publisher.published == 0
        assert [await last_value(owner(redis_cluster, k), k) for k in KEYS] == [None] * len(KEYS)

        proven = True
        publisher.submit(FrameResult(ticks=ticks))
        await publisher.idle()
        assert publisher.published == len(KEYS)
        assert [await last_value(owner(redis_cluster, k), k) for k in KEYS] == [b"{}"] * len(KEYS)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _changed(node: ClusterNode, key: str, before: bytes | None) -> bool:
    now = await last_value(node, key)
    return now is not None and now != before


async def test_status_and_market_info_are_read_in_one_mget(
    cluster_client: aioredis.Redis, ingestor: Ingestor
) -> None:
    """The gateway reads both with one MGET (`upstream_status.py`): they share a slot."""

    async def both() -> list[bytes]:
        values = await cluster_client.mget([rc.MARKET_INFO, rc.INGESTOR_STATUS])
        return [v for v in values if isinstance(v, bytes)]

    found = await eventually(lambda: _all_of(both, 2), "market info and status written")
    market_info, status = found
    assert rc.IngestorStatus.model_validate_json(status).state == "connected"
    assert b"segmentStatus" in market_info


async def _all_of(read: Callable[[], Awaitable[list[bytes]]], count: int) -> list[bytes]:
    values = await read()
    return values if len(values) == count else []


async def test_demand_is_found_through_the_registry(cluster_client: aioredis.Redis) -> None:
    await put_demand(cluster_client, "gw-1", {KEYS[0]: {LTPC}})
    await put_demand(cluster_client, "gw-2", {KEYS[1]: {Mode.FULL}})
    assert await read_demand(cluster_client) == {
        "gw-1": {KEYS[0]: ticks(LTPC)},
        "gw-2": {KEYS[1]: ticks(Mode.FULL)},
    }


async def test_a_registry_member_long_expired_is_dropped(cluster_client: aioredis.Redis) -> None:
    await put_demand(cluster_client, "alive", {KEYS[0]: {LTPC}})
    long_ago = 1_000 - REGISTRY_SWEEP_AFTER_MS
    await cluster_client.zadd(rc.DEMAND_REGISTRY, {"crashed": long_ago})
    assert await read_demand(cluster_client) == {"alive": {KEYS[0]: ticks(LTPC)}}
    assert await cluster_client.zscore(rc.DEMAND_REGISTRY, "crashed") is None
    assert await cluster_client.zscore(rc.DEMAND_REGISTRY, "alive") is not None


async def test_the_ingestor_subscribes_what_the_registered_replicas_want(
    cluster_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
    ingestor: Ingestor,
) -> None:
    await put_demand(cluster_client, "gw-1", {KEYS[0]: {LTPC}})
    await put_demand(cluster_client, "gw-2", {KEYS[1]: {LTPC}})
    wanted = {KEYS[0]: "ltpc", KEYS[1]: "ltpc"}
    await eventually(lambda: _upstream_is(simulator, wanted), "both replicas' keys upstream")


async def _upstream_is(sim: SimulatorHandle, wanted: dict[str, str]) -> bool:
    return await upstream(sim) == wanted


async def test_auth_logs_in_and_out_on_the_cluster(
    cluster_url: str,
    cluster_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    settings = auth_settings(cluster_url, simulator.http_url, redis_cluster=True)
    async with listening(cluster_client) as events, running_auth(settings) as auth:
        accept = {"Accept": "application/json"}
        auth_url = (await auth.http.get("/authorize", headers=accept)).json()["auth_url"]
        state = auth_url.split("state=")[1].split("&")[0]
        code = await login_via_dialog(simulator.http_url, simulator.client_id, REDIRECT_URI, state)
        done = await auth.http.get(
            "/exchange-token", params={"code": code, "state": state}, headers=accept
        )
        assert done.status_code == 200, done.text
        assert (await events.next()).event == "login"
        assert await SessionStore(cluster_client).active_user() == "DEMO01"

        logout = await auth.http.post("/logout")
        assert logout.status_code == 200, logout.text
        assert (await events.next()).event == "logout"
    assert await SessionStore(cluster_client).active_user() is None
