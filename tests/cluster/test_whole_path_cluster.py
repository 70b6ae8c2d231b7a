"""The whole path on a Redis Cluster: simulator → ingestor → cluster (3 masters, 3 replicas) →
two gateways → clients, as real processes (`tickstream dev`'s topology with REDIS_URL naming
one node and REDIS_CLUSTER=true), and the drills: a master SIGKILLed (its replica takes over),
a slot holding subscribed channels moved to another master, the whole cluster restarted. Each
asserts that every subscribed key keeps arriving on both gateways' clients, in order (sequence
numbers increase per key within a connection and epoch), and that no service was restarted.

The keys are picked so their slots are spread over every master. On a main without cluster
support (before issue 14) none of this can run: nothing publishes or subscribes by slot.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from services.gateway.cluster import slot_of
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.cluster.test_gateway_cluster import keys_on_every_master
from tests.support.redis_cluster import RedisClusterHarness
from tests.support.stack import Stack, running_stack
from tests.system.feed import FeedClient, Update

pytestmark = pytest.mark.timeout(300)

FLOWING = 3  # live updates per key that prove it flows


@pytest.fixture(scope="module")
def keys(redis_cluster: RedisClusterHarness) -> list[str]:
    return keys_on_every_master(redis_cluster, per_master=1)


@pytest.fixture(scope="module")
def cluster_stack(redis_cluster: RedisClusterHarness) -> Iterator[Stack]:
    redis_cluster.wait_ok()
    redis_cluster.flush()
    with running_stack(
        gateways=2, redis_url=redis_cluster.url, overrides={"REDIS_CLUSTER": "true"}
    ) as stack:
        yield stack


@pytest.fixture
async def clients(cluster_stack: Stack, keys: list[str]) -> AsyncIterator[list[FeedClient]]:
    """One client on each gateway (straight to it, not through the front), in ltpc."""
    feeds = [
        FeedClient(url.replace("http", "ws", 1) + "/ws", keys) for url in cluster_stack.gateway_urls
    ]
    for feed in feeds:
        await feed.__aenter__()
    try:
        for feed in feeds:
            await every_key_flows(feed, keys, 0, "the first live updates")
        yield feeds
    finally:
        for feed in feeds:
            await feed.__aexit__(None, None, None)


async def every_key_flows(feed: FeedClient, keys: list[str], mark: int, what: str) -> None:
    def flowing() -> bool:
        live = feed.live(mark)
        return all(sum(1 for u in live if u.key == key) >= FLOWING for key in keys)

    await feed.wait_for(flowing, f"{what}: {FLOWING} live updates of each of {keys}", within=90)


def assert_in_order(updates: list[Update]) -> None:
    """Per connection, key and epoch, live sequence numbers only increase."""
    last: dict[tuple[int, str, str], int] = {}
    for update in updates:
        if update.kind != "live_feed":
            continue
        where = (update.connection, update.key, update.epoch)
        assert update.seq > last.get(where, -1), f"{update} after seq {last[where]}"
        last[where] = update.seq


def slot_of_key(key: str) -> int:
    return slot_of(rc.tick_channel(Mode.LTPC, key))


async def test_full_and_ltpc_reach_every_client_of_both_gateways(
    cluster_stack: Stack, keys: list[str]
) -> None:
    for mode in ("full", "ltpc"):
        feeds = [
            FeedClient(url.replace("http", "ws", 1) + "/ws", keys, mode=mode)
            for url in cluster_stack.gateway_urls
        ]
        for feed in feeds:
            async with feed:
                await every_key_flows(feed, keys, 0, f"{mode} on {feed.url}")
                assert not feed.errors, feed.errors
                assert_in_order(feed.updates)


async def drill(
    stack: Stack, clients: list[FeedClient], keys: list[str], fault: Callable[[], None], what: str
) -> None:
    """Inflict `fault` (in a thread: the clients read on this event loop meanwhile), then every
    key flows again on every client, in order, and no service was restarted."""
    pids = stack.pids()
    marks = [feed.mark() for feed in clients]
    await asyncio.to_thread(fault)
    for feed, mark in zip(clients, marks, strict=True):
        await every_key_flows(feed, keys, mark, what)
        assert_in_order(feed.updates)
    stack.assert_survivors(pids)


async def test_a_killed_master_is_replaced_by_its_replica(
    redis_cluster: RedisClusterHarness,
    cluster_stack: Stack,
    clients: list[FeedClient],
    keys: list[str],
) -> None:
    victim = redis_cluster.slot_owner(slot_of_key(keys[0]))

    def kill() -> None:
        redis_cluster.kill(victim)
        redis_cluster.wait_failover()

    await drill(cluster_stack, clients, keys, kill, "after the master's failover")
    await asyncio.to_thread(redis_cluster.revive, victim)  # back as a replica


async def test_a_slot_moved_to_another_master(
    redis_cluster: RedisClusterHarness,
    cluster_stack: Stack,
    clients: list[FeedClient],
    keys: list[str],
) -> None:
    slot = slot_of_key(keys[1])
    source = redis_cluster.slot_owner(slot)
    target = next(node for node in redis_cluster.masters() if node is not source)
    move = functools.partial(redis_cluster.move_slot, slot, target)
    await drill(cluster_stack, clients, keys, move, "after the slot moved")
    assert redis_cluster.slot_owner(slot) is target


async def test_the_whole_cluster_restarted(
    redis_cluster: RedisClusterHarness,
    cluster_stack: Stack,
    clients: list[FeedClient],
    keys: list[str],
) -> None:
    await drill(cluster_stack, clients, keys, redis_cluster.restart_all, "after the restart")
