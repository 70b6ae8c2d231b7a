"""The active-instance lease: one Redis key holding the active ingestor's id, with a PX expiry.

Taking and renewing are one script, so "renew only if it is still mine" and "take it only if it
is free" are each atomic; a standby learns from the same call how long the holder's lease has
left.

`Lease` also keeps the holder's proof: the lease is ours until the TTL has passed since the
start of our last successful renewal, measured on our own monotonic clock. Redis starts its
expiry later (when the script runs), so while the proof holds no standby can have taken the
lease; once it runs out the holder must stop streaming, whether or not Redis answered.

`LeaseTiming` (pure) decides when to try again: the holder renews every `renew_every`
(several tries fit in one TTL, so one slow round trip or a short pause costs nothing); a
standby sleeps until just after the holder's lease would lapse, so a dead holder is replaced
within its remaining TTL plus a few milliseconds, and looks again at least every TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import redis_contract as rc

__all__ = ["Lease", "LeaseTiming", "LeaseView"]

# KEYS[1]: the lease; ARGV: our id, TTL in ms. {1, TTL}: we hold it (renewed or taken);
# {0, PTTL}: another does, with PTTL ms left (-1: no expiry).
ACQUIRE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(ARGV[2])}
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A standby wakes this long after the holder's lease should have lapsed: Redis measured the
# remaining time a little before our clock read the answer, so this only absorbs jitter.
LAPSE_MARGIN = 0.005


@dataclass(frozen=True)
class LeaseView:
    held: bool  # by us, after this call
    holder_ttl: float  # seconds left on the holder's lease as Redis saw it (<0: no expiry)


@dataclass(frozen=True)
class LeaseTiming:
    ttl: float  # seconds
    renew_every: float  # seconds between the starts of the holder's renewals

    def next_try(self, view: LeaseView, elapsed: float) -> float:
        """Seconds to wait before the next acquire, `elapsed` after the last one started."""
        if view.held:
            return max(0.0, self.renew_every - elapsed)
        if view.holder_ttl < 0:
            return self.renew_every  # a lease that never lapses is not ours to fix: keep looking
        return min(view.holder_ttl + LAPSE_MARGIN, self.ttl)


class Lease:
    def __init__(
        self,
        client: aioredis.Redis,
        instance: str,
        ttl_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance = instance
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._valid_until = 0.0
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    async def acquire(self) -> LeaseView:
        """Take the lease if it is free, renew it if it is ours; what another holder has left
        if neither. A success extends the proof to a TTL after this call started."""
        started = self._clock()
        held, holder_ms = await self._acquire(
            keys=[rc.INGESTOR_LEASE], args=[self.instance, self.ttl_ms]
        )
        self._valid_until = started + self.ttl_ms / 1000 if held else 0.0
        return LeaseView(bool(held), int(holder_ms) / 1000)

    def proven(self) -> bool:
        """Whether the lease is certainly still ours (no standby can have taken it yet)."""
        return self._clock() < self._valid_until

    def remaining(self) -> float:
        """Seconds the proof still holds (0 when it does not)."""
        return max(0.0, self._valid_until - self._clock())

    def forget(self) -> None:
        """We no longer count on holding it (stepping down, or stopping)."""
        self._valid_until = 0.0

    async def release(self) -> bool:
        """Give the lease up at once (a clean stop), so a standby need not wait for the TTL."""
        self.forget()
        return bool(await self._release(keys=[rc.INGESTOR_LEASE], args=[self.instance]))
