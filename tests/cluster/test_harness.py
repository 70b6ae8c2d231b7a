"""The cluster harness itself: six nodes, a failover after SIGKILL, a slot move, a restart."""

from __future__ import annotations

from tests.support.redis_cluster import RedisClusterHarness


def test_three_masters_three_replicas(redis_cluster: RedisClusterHarness, cluster_url: str) -> None:
    assert len(redis_cluster.masters()) == 3
    assert len(redis_cluster.replicas()) == 3
    assert len({node.port for node in redis_cluster.nodes}) == 6
    assert cluster_url.startswith("redis://:")


def test_a_killed_master_is_replaced_by_its_replica(
    redis_cluster: RedisClusterHarness, cluster_url: str
) -> None:
    slot = redis_cluster.key_slot("harness-failover")
    victim = redis_cluster.slot_owner(slot)
    redis_cluster.kill(victim)
    redis_cluster.wait_failover()
    successor = redis_cluster.slot_owner(slot)
    assert successor is not victim and successor.alive
    assert successor.role() == "master"
    redis_cluster.revive(victim)
    assert victim.role() == "slave"


def test_a_slot_moves_with_its_keys(redis_cluster: RedisClusterHarness, cluster_url: str) -> None:
    slot = redis_cluster.key_slot("harness-move")
    source = redis_cluster.slot_owner(slot)
    with source.client() as client:
        client.set("harness-move", "kept")
    target = next(node for node in redis_cluster.masters() if node is not source)
    redis_cluster.move_slot(slot, target)
    assert redis_cluster.slot_owner(slot) is target
    with target.client() as client:
        assert client.get("harness-move") == b"kept"


def test_restart_all_serves_every_slot_again(redis_cluster: RedisClusterHarness) -> None:
    before = {node.port for node in redis_cluster.masters()}
    pids = {node.pid for node in redis_cluster.nodes}
    redis_cluster.restart_all()
    assert {node.pid for node in redis_cluster.nodes}.isdisjoint(pids)
    assert {node.port for node in redis_cluster.masters()} == before
