"""The cluster tests' fixtures: one real Redis Cluster per module, flushed before each test.

A module shares its cluster (starting one takes seconds); a test that kills or moves nodes
leaves it served again (`wait_failover`, `revive`) for the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_cluster import RedisClusterHarness, session_cluster
from tests.support.redis_server import RedisUnavailable


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterHarness]:
    try:
        with session_cluster() as cluster:
            yield cluster
    except RedisUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterHarness) -> str:
    """A URL of the module's cluster, every master empty at the start of the test."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster.url
