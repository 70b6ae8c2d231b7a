"""shared.redis_link without Redis: the health transitions and their hooks."""

from __future__ import annotations

from shared.redis_client import connect_redis
from shared.redis_link import RedisHealth, RedisLink
from shared.upstox.backoff import Backoff


def test_hooks_run_once_per_transition_and_failures_are_counted() -> None:
    health = RedisHealth(up=False)
    seen: list[str] = []
    health.on_fail.append(lambda: seen.append("down"))
    health.on_recover.append(lambda: seen.append("up"))
    assert not health.ok
    health.failed(OSError("still down"))  # down already: counted, nothing to announce
    health.recovered()
    health.recovered()
    assert health.ok
    health.failed(OSError("one"))
    health.failed(OSError("two"))
    assert seen == ["up", "down"] and health.errors == 3 and not health.ok


def test_stopped_is_down_without_a_failure() -> None:
    def no_hook() -> None:
        raise AssertionError("stopping runs no hook")

    health = RedisHealth()
    health.on_fail.append(no_hook)
    health.stopped()
    assert not health.ok and health.errors == 0


async def test_a_link_starts_up_and_keeps_its_client() -> None:
    client = connect_redis("redis://127.0.0.1:1/0")
    try:
        link = RedisLink(client, Backoff(0.05, 0.2))
        assert link.ok and link.client is client and link.errors == 0 and link.on_recover == []
    finally:
        await client.aclose()
