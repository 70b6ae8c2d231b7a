"""The one way services open Redis: fail fast, and survive a restarted server.

`Retry(NoBackoff(), 1)` retries a command once at once: a pooled connection that died with a
restarted Redis is replaced on that retry instead of surfacing as an error on the first command
after every restart. Anything longer than that is the caller's business (its own backoff and
status reporting), not a hidden wait inside redis-py.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

# How Redis words a refused AUTH or a command sent without one (redis-py raises
# AuthenticationError for both; a hand-written RESP client sees the error reply itself).
_REFUSALS = ("NOAUTH", "WRONGPASS", "Authentication required", "invalid username-password")


def connect_redis(url: str, *, max_connections: int | None = None) -> aioredis.Redis:
    """A client for `url`. With `max_connections`, the pool is bounded and blocking: a burst of
    commands queues for a connection instead of opening one each (or raising)."""
    options: dict[str, object] = {
        "retry": Retry(NoBackoff(), 1),
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 0,
    }
    if max_connections is None:
        pool = aioredis.ConnectionPool.from_url(url, **options)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, **options
        )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool on aclose()
    return client


def describe_redis_error(error: BaseException) -> str:
    """`error` for a log line. A refused password is said to be one, so an operator looks at
    REDIS_URL's password rather than the network (redis-py calls it a connection error);
    neither Redis's nor redis-py's wording ever includes the password."""
    text = str(error) or type(error).__name__
    if isinstance(error, AuthenticationError) or any(word in text for word in _REFUSALS):
        return f"Redis refused this service's password: REDIS_URL's is missing or wrong ({text})"
    return f"Redis is unreachable ({text})"
