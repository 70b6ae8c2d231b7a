"""A token bucket: the one rate limiter of the services (a gateway client's requests, auth's
login starts, a viewer's /api/history calls), and `BucketTable`, a bucket per client in bounded
memory. Pure state: the caller passes the time (seconds, a monotonic clock)."""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["BucketTable", "TokenBucket"]


class TokenBucket:
    """`rate` tokens a second, at most `capacity` held (default `rate`: bursts of one second's
    worth); it starts full."""

    __slots__ = ("_at", "_capacity", "_rate", "_tokens")

    def __init__(self, rate: float, now: float, capacity: float | None = None) -> None:
        self._rate = rate
        self._capacity = rate if capacity is None else capacity
        self._tokens = self._capacity
        self._at = now

    def take(self, now: float) -> bool:
        """Spend a token if one is there."""
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def seconds_to_next(self) -> float:
        """How long until a token is there (0: now), as of the last `take`."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


class BucketTable:
    """A bucket per client (an address, a viewer): `per_minute` calls, in a burst or spread out.

    The table is bounded: past `max_clients` the least recently seen client is forgotten, so
    many clients cost memory only up to that; a forgotten one gets a full bucket again, which is
    acceptable since it was idle longest.
    """

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
        """0 when `client` may go ahead now (a token is spent), else how many whole seconds
        until it may (the Retry-After)."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, now, capacity=self._capacity)
        self._buckets[client] = bucket  # most recently seen last
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.take(now):
            return 0
        return max(1, math.ceil(bucket.seconds_to_next()))
