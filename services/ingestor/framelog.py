"""The frame log: every frame the active instance receives, appended to the record stream.

The recorder (`services/recorder`) reads `RECORD_STREAM` in a consumer group and acknowledges
only what it has durably written, so the stream is where frames wait while the recorder is
down, restarting, or behind. Entries are the raw frames (`shared.recording` says why), stamped
with when they arrived, this instance's id and a counter that goes up by one per frame: the
recorder reads a jump in the counter as a gap, so frames lost here are reported, never hidden.

The reader hands over each frame (`append`, no await); a task of its own sends what has piled
up as one script call that appends every frame, fenced by the lease as the publisher's is (the
stream is in the lease's slot, so the fence holds in a Redis Cluster too). While Redis is
unreachable frames wait here, up to `INGESTOR_RECORD_BUFFER_MB`; past that the oldest are
dropped (a gap the recorder will report).

The stream is trimmed approximately (`MAXLEN ~`) to what `INGESTOR_RECORD_STREAM_MB` holds at
the recent average frame size, so its memory stays bounded whatever the frames weigh, and the
live feed's Redis never fills up with a recording nobody reads. How long that lets a recorder
be away: the budget over the feed's bytes per second (README, "Recording").
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from shared import redis_contract as rc
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded

__all__ = ["APPEND_SCRIPT", "FrameLog"]

logger = logging.getLogger(__name__)

# KEYS: the lease, the stream; ARGV: our instance id, MAXLEN, then frame, received ms, counter
# per frame. -1: another instance holds the lease (nothing appended).
APPEND_SCRIPT: Final = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return -1
end
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    'f', ARGV[i], 't', ARGV[i + 1], 'i', ARGV[1], 'n', ARGV[i + 2])
end
return (#ARGV - 2) / 3
"""
_FENCED: Final = -1
_BATCH_BYTES: Final = 4 << 20  # one script call appends at most about this much
_SIZE_WEIGHT: Final = 0.01  # of each frame in the running average frame size


class FrameLog:
    def __init__(
        self, link: RedisLink, *, instance: str, stream_bytes: int, buffer_bytes: int
    ) -> None:
        self._link = link
        self._instance = instance
        self._stream_bytes = stream_bytes
        self._buffer_bytes = buffer_bytes
        self._queue: deque[tuple[bytes, int, int]] = deque()  # (frame, received ms, counter)
        self._queued_bytes = 0
        self._counter = 0
        self._average = 0.0  # running average frame size, for MAXLEN
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._refused = False
        self.appended = 0  # frames Redis acknowledged
        self.dropped = 0  # frames dropped here (buffer full, or fenced)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def append(self, frame: bytes, received_ms: int) -> None:
        """Queue one frame as received (called by the reader; never waits)."""
        self._counter += 1
        size = len(frame)
        self._average += (size - self._average) * (_SIZE_WEIGHT if self._average else 1.0)
        self._queue.append((frame, received_ms, self._counter))
        self._queued_bytes += size
        while self._queued_bytes > self._buffer_bytes and len(self._queue) > 1:
            self._drop_oldest()
        self._idle.clear()
        self._wake.set()

    def maxlen(self) -> int:
        """Stream entries that fit the stream's byte budget at the recent frame size."""
        return max(100, int(self._stream_bytes / max(self._average, 1.0)))

    def forget(self) -> None:
        """Drop everything queued (the instance became a standby: none of it may go out). The
        counter goes on, so that frames never appended show as a gap if this instance becomes
        active again."""
        self.dropped += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._refused = False
        self._idle.set()

    async def idle(self) -> None:
        """Wait until everything appended so far has been sent (or dropped)."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._link.wait_up()
                try:
                    await guarded(self._send_batch())
                except REDIS_ERRORS as error:
                    self._link.failed(error)  # frames stay queued; sent once Redis is back
            self._idle.set()

    async def _send_batch(self) -> None:
        # The batch leaves the queue while it is in flight, so that frames dropped meanwhile
        # (the buffer full) are never the ones being sent; it goes back if the call fails.
        batch: list[tuple[bytes, int, int]] = []
        size = 0
        while self._queue and size < _BATCH_BYTES:
            batch.append(self._queue.popleft())
            size += len(batch[-1][0])
        self._queued_bytes -= size
        args: list[bytes | str | int] = [self._instance, self.maxlen()]
        for frame, received_ms, counter in batch:
            args += [frame, received_ms, counter]
        keys = [rc.INGESTOR_LEASE, rc.RECORD_STREAM]
        try:
            answer = await self._link.client.eval(APPEND_SCRIPT, len(keys), *keys, *args)
        except BaseException:
            self._queue.extendleft(reversed(batch))
            self._queued_bytes += size
            raise
        if int(answer) == _FENCED:
            if not self._refused:
                logger.warning("another instance holds the lease: frames are not recorded")
                self._refused = True
            self.dropped += len(batch)
            self.forget()
            return
        self.appended += len(batch)

    def _drop_oldest(self) -> None:
        frame, _, _ = self._queue.popleft()
        self._queued_bytes -= len(frame)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning(
                "the frame log is full (Redis unreachable for long): %d frames dropped from the "
                "recording so far; the recorder reports the gap",
                self.dropped,
            )
