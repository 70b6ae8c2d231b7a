"""The gateway's cluster subscriber: slot routing (pure), then a real gateway against a real
Redis Cluster (3 masters, 3 replicas) receiving SPUBLISHed ticks for keys spread over every
master, through a master's failover, a slot moved to another master and the whole cluster
restarted. Ticks are written the way the ingestor writes them on a cluster (the last value
SET, the tick SPUBLISHed), by a redis-py cluster client.

Every drill fails on a gateway without cluster support (before this change there was none:
one classic SUBSCRIBE connection to REDIS_URL's node, which an SPUBLISH on another node never
reaches).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from services.gateway.cluster import SlotMap, group_by_slot, is_sharded, node_url, slot_of
from services.simulator.universe import universe
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.gateway.conftest import Client, GatewayHandle, client, eventually, running_gateway
from tests.support.redis_cluster import RedisClusterHarness

# ---- pure routing ---------------------------------------------------------------------------


def _reply(*ranges: tuple[int, int, int]) -> list[list[object]]:
    return [
        [start, end, [b"10.0.0.1", port, b"id"], [b"10.0.0.2", port + 1, b"r"]]
        for start, end, port in ranges
    ]


def test_slot_map_routes_each_channel_to_its_slots_master() -> None:
    slot_map = SlotMap.from_slots_reply(
        _reply((5461, 10922, 7001), (0, 5460, 7000), (10923, 16383, 7002)), ("seed", 1)
    )
    assert slot_map.complete
    assert slot_map.masters == {("10.0.0.1", 7000), ("10.0.0.1", 7001), ("10.0.0.1", 7002)}
    assert ("10.0.0.2", 7001) in slot_map.nodes  # replicas are known: asked when a master dies
    assert slot_map.master_of(0) == ("10.0.0.1", 7000)
    assert slot_map.master_of(5460) == ("10.0.0.1", 7000)
    assert slot_map.master_of(5461) == ("10.0.0.1", 7001)
    assert slot_map.master_of(16383) == ("10.0.0.1", 7002)
    # The hash tag: a channel and its last value share the instrument's slot, in every mode.
    key = "NSE_EQ|INE002A01018"
    channels = [rc.tick_channel(mode, key).encode() for mode in Mode]
    assert len({slot_of(name) for name in channels}) == 1
    assert slot_of(rc.last_value_key(Mode.FULL, key)) == slot_of(channels[0])
    routed = slot_map.route([*channels, rc.INGESTOR_EVENTS.encode()])
    assert sum(len(names) for names in routed.values()) == len(channels) + 1
    assert routed[slot_map.master_of(slot_of(channels[0]))][: len(channels)] == channels
    assert group_by_slot(channels) == {slot_of(channels[0]): channels}
    assert is_sharded(channels[0]) and not is_sharded(rc.INGESTOR_EVENTS.encode())


def test_slot_map_knows_a_slot_nobody_serves() -> None:
    slot_map = SlotMap.from_slots_reply(_reply((0, 5460, 7000), (10923, 16383, 7002)), ("s", 1))
    assert not slot_map.complete  # a master died and its replica is not promoted yet
    assert slot_map.master_of(6000) is None
    name = next(
        rc.tick_channel(Mode.LTPC, i.instrument_key).encode()
        for i in universe()
        if 5461 <= slot_of(rc.tick_channel(Mode.LTPC, i.instrument_key)) <= 10922
    )
    assert slot_map.route([name]) == {None: [name]}


def test_node_urls_keep_the_seeds_scheme_and_credentials() -> None:
    seed = "rediss://user:s%40cret@redis-0.redis:6379/0"
    assert node_url(seed, ("10.1.2.3", 7001)) == "rediss://user:s%40cret@10.1.2.3:7001"
    assert node_url("redis://h:1", ("::1", 7001)) == "redis://[::1]:7001"


def test_an_announced_empty_host_is_the_node_answering() -> None:
    slot_map = SlotMap.from_slots_reply([[0, 16383, [b"", 7000, b"id"]]], ("10.9.9.9", 7000))
    assert slot_map.master_of(1) == ("10.9.9.9", 7000)


# ---- a real gateway on a real cluster --------------------------------------------------------

CROWD = 150  # clients subscribing at the same moment


def keys_on_every_master(cluster: RedisClusterHarness, per_master: int = 2) -> list[str]:
    """Catalogue keys whose slots are spread over every master, `per_master` on each."""
    picked: dict[int, list[str]] = {node.port: [] for node in cluster.masters()}
    for instrument in universe():
        key = instrument.instrument_key
        owner = cluster.slot_owner(slot_of(rc.tick_channel(Mode.LTPC, key)))
        if len(picked[owner.port]) < per_master:
            picked[owner.port].append(key)
        if all(len(keys) == per_master for keys in picked.values()):
            break
    return [key for keys in picked.values() for key in keys]


@pytest.fixture
async def writer(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster_url)
    yield client
    await client.aclose()


async def spublish(redis: RedisCluster, key: str, seq: int, mode: Mode = Mode.LTPC) -> None:
    """What the ingestor does on a cluster: SET the last value, SPUBLISH the tick (one slot)."""
    value = b'{"ltpc":{"ltp":%d.5,"ltt":"1","ltq":"1","cp":1.0}}' % seq
    payload = rc.encode_tick(value, seq, "e1", int(time.time() * 1000))
    await redis.set(rc.last_value_key(mode, key), payload)
    await redis.spublish(rc.tick_channel(mode, key), payload)


async def publish_round(cluster: RedisClusterHarness, keys: list[str], seq: int) -> None:
    """One tick per key, with a fresh cluster client from a live node (the topology may have
    changed, REDIS_URL's node may be the one killed); retried until every slot is served."""

    async def attempt() -> bool:
        redis = RedisCluster.from_url(cluster.url)
        try:
            for key in keys:
                await spublish(redis, key, seq)
        except Exception:  # a failover in progress: try again
            return False
        finally:
            await redis.aclose()
        return True

    await eventually(attempt, f"publishing round {seq}")


async def stream_until(ws: Client, keys: list[str], seq: int) -> dict[str, list[int]]:
    return {key: await ws.collect_until(key, seq) for key in keys}


def assert_increasing(updates: dict[str, list[int]], last: int) -> None:
    for key, seqs in updates.items():
        assert seqs == sorted(set(seqs)), f"{key}: out of order or repeated: {seqs}"
        assert seqs[-1] == last, key


def connects_by_node(gateway: GatewayHandle) -> dict[str, int]:
    return {shard.label: shard.connects for shard in gateway.hub.broker.nodes()}


async def test_ticks_published_on_every_master_reach_the_client(
    redis_cluster: RedisClusterHarness, cluster_url: str, writer: RedisCluster
) -> None:
    keys = keys_on_every_master(redis_cluster)
    async with running_gateway(cluster_url, redis_cluster=True) as gateway:
        assert len(gateway.hub.broker.nodes()) == 3  # one pub/sub connection per master
        await spublish(writer, keys[0], 1)  # a last value before the subscribe: the snapshot
        async with client(gateway.ws_url) as ws:
            initial = await ws.subscribe(keys)
            assert initial["meta"][keys[0]]["seq"] == 1
            for seq in range(2, 6):
                for key in keys:
                    await spublish(writer, key, seq)
            assert_increasing(await stream_until(ws, keys, 5), 5)
        metrics = await _metrics(gateway)
        for node in redis_cluster.masters():
            assert f'tickstream_gateway_redis_node_up{{node="{node.host}:{node.port}"}} 1.0' in (
                metrics
            )


async def _metrics(gateway: GatewayHandle) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{gateway.http_url}/metrics")).text


async def test_a_killed_master_is_followed_to_its_promoted_replica(
    redis_cluster: RedisClusterHarness, cluster_url: str, writer: RedisCluster
) -> None:
    keys = keys_on_every_master(redis_cluster)
    async with running_gateway(cluster_url, redis_cluster=True) as gateway:
        async with client(gateway.ws_url) as ws:
            await ws.subscribe(keys)
            await publish_round(redis_cluster, keys, 1)
            await stream_until(ws, keys, 1)
            victim = redis_cluster.slot_owner(slot_of(rc.tick_channel(Mode.LTPC, keys[0])))
            healthy = {f"{n.host}:{n.port}" for n in redis_cluster.masters() if n is not victim}
            before = connects_by_node(gateway)
            # In a thread: the gateway runs on this event loop and must see it happen.
            await asyncio.to_thread(redis_cluster.kill, victim)
            await asyncio.to_thread(redis_cluster.wait_failover)
            gone = f"{victim.host}:{victim.port}"
            await eventually(
                lambda: gone not in connects_by_node(gateway) and gateway.hub.redis_up,
                "the gateway on the promoted replica",
            )
            for seq in (2, 3, 4):
                await publish_round(redis_cluster, keys, seq)
            updates = await stream_until(ws, keys, 4)
            after = connects_by_node(gateway)
        assert all(after[label] == before[label] for label in healthy)  # untouched
        assert len(after) == 3
    await asyncio.to_thread(redis_cluster.revive, victim)  # back as a replica, for the next test
    assert_increasing(updates, 4)


async def test_a_moved_slot_is_followed_to_its_new_master(
    redis_cluster: RedisClusterHarness, cluster_url: str, writer: RedisCluster
) -> None:
    keys = keys_on_every_master(redis_cluster, per_master=1)
    moved = keys[0]
    slot = slot_of(rc.tick_channel(Mode.LTPC, moved))
    async with running_gateway(cluster_url, redis_cluster=True) as gateway:
        async with client(gateway.ws_url) as ws:
            await ws.subscribe(keys)
            await publish_round(redis_cluster, keys, 1)
            await stream_until(ws, keys, 1)
            source = redis_cluster.slot_owner(slot)
            target = next(n for n in redis_cluster.masters() if n is not source)
            await asyncio.to_thread(redis_cluster.move_slot, slot, target)
            channel = gateway.hub.fanout.by_name[rc.tick_channel(Mode.LTPC, moved).encode()]
            await eventually(
                lambda: gateway.hub.broker.channels_moved >= 1 and channel.ready,
                "the node's sunsubscribe followed: the channel confirmed on its new master",
            )
            for seq in (2, 3, 4):
                await publish_round(redis_cluster, keys, seq)
            assert_increasing(await stream_until(ws, keys, 4), 4)
        assert redis_cluster.slot_owner(slot) is target


async def test_the_whole_cluster_restarted(
    redis_cluster: RedisClusterHarness, cluster_url: str, writer: RedisCluster
) -> None:
    keys = keys_on_every_master(redis_cluster, per_master=1)
    async with (
        running_gateway(cluster_url, redis_cluster=True) as gateway,
        client(gateway.ws_url) as ws,
    ):
        await ws.subscribe(keys)
        await publish_round(redis_cluster, keys, 1)
        await stream_until(ws, keys, 1)
        before = connects_by_node(gateway)
        await asyncio.to_thread(redis_cluster.restart_all)

        def reconnected() -> bool:
            after = connects_by_node(gateway)
            return gateway.hub.redis_up and all(after[node] > n for node, n in before.items())

        await eventually(reconnected, "every connection rebuilt and resynced")
        for seq in (2, 3):
            await publish_round(redis_cluster, keys, seq)
        assert_increasing(await stream_until(ws, keys, 3), 3)


async def test_many_clients_subscribing_at_once_each_get_their_snapshot(
    redis_cluster: RedisClusterHarness, cluster_url: str, writer: RedisCluster
) -> None:
    """Snapshots on a cluster are read per slot (redis-py's non-atomic MGET); a burst of them
    on connections the client is still opening used to fail inside redis-py (snapshots.py's
    CLUSTER_READS), and those clients got no initial_feed."""
    keys = keys_on_every_master(redis_cluster)
    for key in keys:
        await spublish(writer, key, 7)
    async with (
        running_gateway(cluster_url, redis_cluster=True) as gateway,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [await stack.enter_async_context(client(gateway.ws_url)) for _ in range(CROWD)]
        initials = await asyncio.gather(*(ws.subscribe(keys) for ws in clients))
    for initial in initials:
        assert {key: initial["meta"][key]["seq"] for key in keys} == dict.fromkeys(keys, 7)
