"""How often one client address may start a login (`/authorize`) or try to sign in as the
operator: a token bucket per address, in memory, pure (the caller passes the time). It must not
know about requests or Redis.

Each `/authorize` writes an OAuth state to Redis, so an unthrottled client could fill Redis
with them for as long as their TTL; each operator sign-in is a guess at a secret. A bucket
holds `per_minute` attempts and refills at that rate; the table of addresses is bounded (the
least recently seen one is forgotten first), so many addresses cost memory only up to
`max_clients`. Forgetting one hands it a full bucket again: acceptable, since it was idle
longest.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from shared.token_bucket import TokenBucket

__all__ = ["AuthorizeLimit"]


class AuthorizeLimit:
    """Admits or refuses one start per call, per client address."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        if per_minute < 1 or max_clients < 1:
            raise ValueError("per_minute and max_clients must be at least 1")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, now: float) -> int:
        """0 when `client` may start a login now (a token is spent), else how many whole
        seconds until it may (the Retry-After)."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, now, capacity=self._capacity)
        self._buckets[client] = bucket  # most recently seen last
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.take(now):
            return 0
        return max(1, math.ceil(bucket.seconds_to_next()))
