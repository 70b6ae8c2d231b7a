"""The active-instance lease: one Redis key holding the active ingestor's id, with a PX expiry.

Taking and renewing are one script, so "renew only if it is still mine" and "take it only if it
is free" are each atomic. The holder renews every third of the TTL; a holder that dies stops
renewing and the key lapses, and a standby polling at the same pace takes it within a TTL plus
a poll interval.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from shared import redis_contract as rc

# KEYS[1]: the lease; ARGV: our id, TTL in ms. 1: we hold it (renewed or taken), 0: another does.
ACQUIRE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: aioredis.Redis, instance: str, ttl_ms: int) -> None:
        self.instance = instance
        self.ttl_ms = ttl_ms
        self._acquire = client.register_script(ACQUIRE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    async def acquire(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; False if another holds it."""
        return bool(
            await self._acquire(keys=[rc.INGESTOR_LEASE], args=[self.instance, self.ttl_ms])
        )

    async def release(self) -> bool:
        """Give the lease up at once (a clean stop), so a standby need not wait for the TTL."""
        return bool(await self._release(keys=[rc.INGESTOR_LEASE], args=[self.instance]))
