"""A token bucket: the one rate limiter of the services (a gateway client's requests, auth's
login starts). Pure state: the caller passes the time (seconds, a monotonic clock)."""

from __future__ import annotations

__all__ = ["TokenBucket"]


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
