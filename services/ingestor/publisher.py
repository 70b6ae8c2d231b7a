"""The publisher: ticks to Redis in batches, one round trip per batch, never one per tick.

The reader hands over each frame's ticks (`submit`, no await); the publisher task sends whatever
has piled up since its last round trip as one script call that PUBLISHes each payload on its
channel and SETs it as the last value (a partial payload's last value is the whole value the
processor merged). Under load batches grow, so throughput rises with load;
idle, a frame goes out as soon as it arrives. While Redis is unreachable nothing is queued: the
processor keeps each (mode, key)'s newest payload, and those are published again on recovery.

The script is fenced by the lease: it publishes nothing while another instance holds it, so an
instance that was paused past its lease (and has not yet noticed it lost it) can never publish
after the new holder has. Nothing else here knows about the lease.

In a Redis Cluster (REDIS_CLUSTER) a batch is split by slot and each slot's ticks go as one
`SHARDED_SCRIPT` call (SPUBLISH + SET: an instrument's channel and last value share its hash
tag), all pipelined at once, one connection per master. redis-py sends a call answered MOVED
or ASK (a slot migrating) again to the new owner, so no tick is lost to a move. The lease lives
in another slot and cannot be read by these scripts: the fence is the instance's own proof
instead (`lease_proven`, checked right before each batch: the lease is certainly ours until
the TTL has passed since our last successful renewal began, see `lease.py`). What that leaves
open: a batch checked just before the proof runs out may reach Redis after it did, if the
instance is paused (or the network stalls) in between; a standby only takes over once Redis's
own expiry has passed, which starts later than our proof, so the overlap is at most that pause
minus the renewal's round trip. One Redis keeps the fence inside the script, with no window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.crc import key_slot

from services.ingestor.processor import FrameResult, Tick
from shared import redis_contract as rc
from shared.metrics import Buckets
from shared.redis_client import is_cluster, queue_publish
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded
from shared.resp import bulk

logger = logging.getLogger(__name__)


def _publish_loop(first_key: int, command: str) -> str:
    """Lua: for KEYS[first_key..], `command` (PUBLISH or SPUBLISH) each payload on its channel
    and SET it as the last value; ARGV[2] is the ttl (seconds, 0: none), then channel, payload,
    last value per key (an empty last value: the payload itself, so a whole tick's bytes go
    once). Returns how many were published."""
    return f"""
local ttl = tonumber(ARGV[2])
for i = {first_key}, #KEYS do
  local j = 3 * (i - {first_key}) + 3
  local payload = ARGV[j + 1]
  redis.call('{command}', ARGV[j], payload)
  local last = ARGV[j + 2]
  if last == '' then
    last = payload
  end
  if ttl > 0 then
    redis.call('SET', KEYS[i], last, 'EX', ttl)
  else
    redis.call('SET', KEYS[i], last)
  end
end
return #KEYS - {first_key - 1}
"""


# KEYS: the lease, then last-value keys; ARGV: our instance id, then as `_publish_loop`. -1
# (nothing published): another instance holds the lease. A lease held by nobody does not stop
# it: no other instance publishes then.
PUBLISH_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return -1
end""" + _publish_loop(2, "PUBLISH")
FENCED = -1

# The cluster's script, one call per slot: KEYS are last-value keys of one slot (the lease is
# elsewhere: see the module docstring); ARGV as for `PUBLISH_SCRIPT`.
SHARDED_SCRIPT = _publish_loop(1, "SPUBLISH")

# Ticks per script call: large enough to amortise the round trip, small enough that Redis is
# never blocked for long by one call.
CHUNK = 2000
_MAX_CACHED_NAMES = 100_000
_EMPTY_BULK = bulk(b"")

# Exchange time -> published: sub-millisecond when idle, seconds when Redis or upstream lag.
# Floats: a bound's `le` label is its str(), and these series have always read le="1.0".
LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Publisher:
    def __init__(
        self,
        link: RedisLink,
        *,
        last_value_ttl: int,
        max_pending: int,
        latest: Callable[[], list[Tick]],
        latest_market_info: Callable[[], bytes | None],
        instance: str = "",
        lease_proven: Callable[[], bool] = lambda: True,
    ) -> None:
        """`instance`: the lease holder id this publisher publishes for (see the script);
        `lease_proven`: whether the lease is certainly still ours (the cluster's fence)."""
        self._link = link
        self._instance = instance
        self._cluster = is_cluster(link.client)
        self._lease_proven = lease_proven
        self._ttl = last_value_ttl
        self._max_pending = max_pending
        self._latest = latest
        self._latest_market_info = latest_market_info
        script = PUBLISH_SCRIPT.encode()
        # EVAL rather than EVALSHA: a restarted Redis has no script cache to miss.
        self._eval = bulk(b"EVAL") + bulk(script)
        self._lease_bulk = bulk(rc.INGESTOR_LEASE.encode())
        self._args_bulk = bulk(instance.encode()) + bulk(str(last_value_ttl).encode())
        self._bulks: dict[bytes, bytes] = {}
        self._pending: list[Tick] = []
        self._frames: list[tuple[int, float]] = []  # (currentTs, received) of queued frames
        self._market_info: bytes | None = None
        self._stale = False  # Redis missed something: publish every latest value again
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.published = 0  # payloads (JSON ticks and protobuf entries) Redis acknowledged
        self.shed = 0  # ticks dropped because Redis was down or too slow
        self._refused = False  # by the fence, since the last `forget`
        self.lag = Buckets(LAG_BUCKETS)  # frame currentTs -> Redis acknowledged
        self.processing = Buckets(LAG_BUCKETS)  # frame received -> Redis acknowledged

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def submit(self, result: FrameResult) -> None:
        """Queue one processed frame (called by the reader; never waits)."""
        if result.market_info is not None:
            self._market_info = result.market_info
        elif not result.ticks and not result.entries:
            return
        if not self._link.ok:
            self._shed(len(result.ticks) + len(result.entries))
            return
        self._pending.extend(result.ticks)
        self._pending.extend(result.entries)  # same script call: one round trip for both
        self._frames.append((result.ts, result.received))
        if len(self._pending) > self._max_pending:
            logger.warning(
                "Redis is not keeping up: shedding %d queued ticks; their latest values will "
                "be published again",
                len(self._pending),
            )
            self._shed(len(self._pending))
        self._idle.clear()
        self._wake.set()

    def republish_all(self) -> None:
        """Publish every latest value and the market status again (after a Redis outage)."""
        self._stale = True
        self._idle.clear()
        self._wake.set()

    async def idle(self) -> None:
        """Wait until everything submitted so far has been sent (or shed)."""
        await self._idle.wait()

    def forget(self) -> None:
        """Drop everything queued (the instance became a standby: none of it may go out)."""
        self._pending = []
        self._frames = []
        self._market_info = None
        self._stale = False
        self._refused = False
        self._idle.set()

    def _shed(self, count: int) -> None:
        self.shed += count
        self._pending = []
        self._frames = []
        self._stale = True

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._link.wait_up()
            while self._pending or self._stale or self._market_info is not None:
                if not await self._send_once():
                    break  # Redis went away; `republish_all` wakes us when it is back
            if not self._pending and not self._stale and self._market_info is None:
                self._idle.set()

    async def _send_once(self) -> bool:
        if self._stale:
            self._stale = False
            self._pending = []
            self._frames = []
            batch = self._latest()
            market_info = self._latest_market_info()
            frames: list[tuple[int, float]] = []
            if batch:
                logger.info("publishing %d latest values again", len(batch))
        else:
            batch, self._pending = self._pending, []
            frames, self._frames = self._frames, []
            market_info = self._market_info
        self._market_info = None
        try:
            if market_info is not None:
                await guarded(self._send_market_info(market_info))
            for start in range(0, len(batch), CHUNK):
                if await guarded(self._send_chunk(batch[start : start + CHUNK])) == FENCED:
                    self._fenced()
                    return True
        except REDIS_ERRORS as error:
            self._link.failed(error)
            self._stale = True
            self.shed += len(batch)
            return False
        self.published += len(batch)
        if frames:
            now_ms, now = time.time() * 1000.0, time.monotonic()
            lag, processing = self.lag.observe, self.processing.observe
            for ts, received in frames:
                if ts:
                    lag(max(0.0, now_ms - ts) / 1000.0)
                if received:
                    processing(now - received)
        return True

    def _fenced(self) -> None:
        if not self._refused:
            logger.warning("another instance holds the lease: its ticks are not published")
            self._refused = True

    async def _send_market_info(self, market_info: bytes) -> None:
        async with self._link.client.pipeline(transaction=False) as pipe:
            pipe.set(rc.MARKET_INFO, market_info)
            queue_publish(pipe, rc.MARKET_INFO_EVENTS, market_info)
            await pipe.execute()

    async def _send_chunk(self, ticks: list[Tick]) -> int:
        """The script's answer: ticks published, or `FENCED`."""
        if self._cluster:
            return await self._send_sharded(ticks)
        data = self._pack(ticks)
        pool = self._link.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(data, check_health=False)
            # raises ResponseError if the script failed
            answer: int = await connection.read_response()
        except BaseException:
            # A reply left unread would be handed to the next user of this connection.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return answer

    async def _send_sharded(self, ticks: list[Tick]) -> int:
        if not self._lease_proven():
            return FENCED
        by_slot: dict[int, list[Tick]] = {}
        for tick in ticks:
            by_slot.setdefault(key_slot(tick[1]), []).append(tick)
        async with self._link.client.pipeline(transaction=False) as pipe:
            for group in by_slot.values():
                args: list[Any] = [self._instance, self._ttl]
                for channel, _, payload, last in group:
                    args += [channel, payload, last or b""]
                keys = [tick[1] for tick in group]
                pipe.execute_command("EVAL", SHARDED_SCRIPT, len(keys), *keys, *args)
            answers = await pipe.execute()
        return sum(int(answer) for answer in answers)

    def _pack(self, ticks: list[Tick]) -> bytes:
        """`EVAL script n lease last-keys... instance ttl channel payload last ...` in RESP,
        built directly.

        redis-py's generic argument packing was the publisher's largest cost per tick; channel
        and key names repeat from frame to frame, so their encodings are cached.
        """
        cached = self._bulk
        parts = [b"*%d\r\n" % (6 + 4 * len(ticks)), self._eval, bulk(b"%d" % (1 + len(ticks)))]
        parts.append(self._lease_bulk)
        parts.extend([cached(tick[1]) for tick in ticks])
        parts.append(self._args_bulk)
        for channel, _, payload, last in ticks:
            parts.append(cached(channel))
            parts.append(bulk(payload))
            parts.append(bulk(last) if last else _EMPTY_BULK)
        return b"".join(parts)

    def _bulk(self, name: bytes) -> bytes:
        encoded = self._bulks.get(name)
        if encoded is None:
            if len(self._bulks) > _MAX_CACHED_NAMES:
                self._bulks.clear()
            encoded = self._bulks[name] = bulk(name)
        return encoded
