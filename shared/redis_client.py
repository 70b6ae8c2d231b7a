"""The one way services open Redis: fail fast, and survive a restarted server.

`Retry(NoBackoff(), 1)` retries a command once at once: a pooled connection that died with a
restarted Redis is replaced on that retry instead of surfacing as an error on the first command
after every restart. Anything longer than that is the caller's business (its own backoff and
status reporting), not a hidden wait inside redis-py.

With `cluster` (setting REDIS_CLUSTER) the client is redis-py's `RedisCluster`, seeded from the
URL's node (password and TLS from the URL as for one Redis). It follows MOVED and ASK itself
and speaks the same commands for keys of one slot, so callers hold it as an `aioredis.Redis`;
what differs (sharded pub/sub, per-slot scripts) checks `is_cluster`.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

# How Redis words a refused AUTH or a command sent without one (redis-py raises
# AuthenticationError for both; a hand-written RESP client sees the error reply itself).
_REFUSALS = ("NOAUTH", "WRONGPASS", "Authentication required", "invalid username-password")


def connect_redis(
    url: str, *, cluster: bool = False, max_connections: int | None = None
) -> aioredis.Redis:
    """A client for `url`. With `max_connections`, the pool is bounded and blocking: a burst of
    commands queues for a connection instead of opening one each (or raising). A cluster
    client ignores it: redis-py's per-node bound raises instead of queueing."""
    options: dict[str, Any] = {
        "retry": Retry(NoBackoff(), 1),
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 0,
    }
    if cluster:
        return cast(aioredis.Redis, RedisCluster.from_url(url, **options))
    if max_connections is None:
        pool = aioredis.ConnectionPool.from_url(url, **options)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, **options
        )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool on aclose()
    return client


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def queue_publish(pipe: Any, channel: str, message: str | bytes) -> None:
    """Queue a PUBLISH in `pipe` (a pipeline or transaction, of one Redis or a cluster).

    redis-py's cluster pipeline refuses its `publish()` method; the raw command is accepted and
    routed by the channel's name, which carries the hash tag of the keys it announces
    (`redis_contract`), so a transaction stays in one slot. Classic pub/sub reaches every node.
    """
    pipe.execute_command("PUBLISH", channel, message)


def describe_redis_error(error: BaseException) -> str:
    """`error` for a log line. A refused password is said to be one, so an operator looks at
    REDIS_URL's password rather than the network (redis-py calls it a connection error);
    neither Redis's nor redis-py's wording ever includes the password."""
    text = str(error) or type(error).__name__
    if isinstance(error, AuthenticationError) or any(word in text for word in _REFUSALS):
        return f"Redis refused this service's password: REDIS_URL's is missing or wrong ({text})"
    return f"Redis is unreachable ({text})"
