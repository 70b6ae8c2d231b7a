"""The recorder service: the record stream, in its consumer group, to durable files.

```
Redis link (always): probes with backoff after a failure
consume: XREADGROUP (own pending entries first, id "0", then ">") -> buffer
         -> every RECORDER_FLUSH_SECONDS or RECORDER_FLUSH_FRAMES: gaps, files (store) -> XACK
status:  RECORDER_STATUS with a TTL, lag from XINFO GROUPS
housekeeping: retention (at start and hourly)
```

`Recorder` owns the order that makes the recording whole: nothing is acknowledged before it
is on disk, entries at or below the newest id on disk are acknowledged without being written
(a crash between write and ack), and while the disk fails the buffer is kept, bounded, and the
stream is left unread past it (Redis keeps the entries; trimmed ones surface as a gap). It does
not know the file layout (`store`) or how a gap is found (`gaps`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from services.recorder.gaps import Gap, GapDetector
from services.recorder.metrics import RecorderCollector
from services.recorder.settings import RecorderSettings
from services.recorder.store import Store
from shared import redis_contract as rc
from shared.ist import IST
from shared.metrics import registry_for
from shared.recording import StreamFrame, stream_id_key
from shared.redis_client import connect_redis
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded
from shared.resp import as_text
from shared.tasks import cancel_and_wait

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

STATUS_TTL_MS = 15_000
STATUS_EVERY = 2.0
HOUSEKEEPING_EVERY = 3600.0
READ_COUNT = 1000
FIELD_DATA, FIELD_RECEIVED, FIELD_INSTANCE, FIELD_SEQ = rc.RECORD_FIELDS


def decode_entry(stream_id: str, fields: dict[bytes, bytes]) -> StreamFrame:
    return StreamFrame(
        stream_id=stream_id,
        received_ms=int(fields[FIELD_RECEIVED]),
        instance=as_text(fields[FIELD_INSTANCE]),
        seq=int(fields[FIELD_SEQ]),
        data=fields[FIELD_DATA],
    )


class Recorder:
    """`await start()`, later `await stop()` (which flushes what it holds, if it can)."""

    def __init__(self, settings: RecorderSettings) -> None:
        self.settings = settings
        self.instance = settings.recorder_consumer
        self.store = Store(settings.recorder_dir)
        self.link = RedisLink(
            connect_redis(settings.redis_url, cluster=settings.redis_cluster), settings.backoff()
        )
        self.metrics = registry_for(RecorderCollector(self))
        self.buffer: list[StreamFrame] = []
        self.frames_recorded = 0
        self.ticks_recorded = 0
        self.bytes_written = 0
        self.write_errors = 0
        self.gaps = 0
        self.gap_frames = 0
        self.lag_frames: int | None = None
        self.last_recorded_id: str | None = None
        self.last_received_ms: int | None = None
        self.disk_error: str | None = None
        self.started = False  # the disk was scanned: the high-water mark is known
        self._catching_up = True  # re-reading this consumer's pending entries
        self._pending_from = "0"
        self._group_ready = False
        self._unacked: list[str] = []  # on disk, acknowledgement not yet accepted by Redis
        self._detector = GapDetector()
        self._known_gaps: set[tuple[str, int, int]] = set()
        self._flush_due = time.monotonic() + settings.recorder_flush_seconds
        self._task: asyncio.Task[None] | None = None
        self._wrote = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this recorder was already started")
        logger.info("recorder %s starting, recording to %s", self.instance, self.store.root)
        self._task = asyncio.create_task(self._main(), name="recorder")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self.started and self.buffer and self.link.ok:
            with contextlib.suppress(*REDIS_ERRORS, OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await self._flush()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.link.client.aclose()
        logger.info("recorder %s stopped", self.instance)

    # ---- what others look at -----------------------------------------------------------------

    @property
    def state(self) -> rc.RecorderState:
        if not self.link.ok:
            return "redis_down"
        if self.disk_error is not None:
            return "disk_error"
        if not self.started:
            return "starting"
        lag = self.lag_frames or 0
        if self._catching_up or lag > self.settings.recorder_flush_frames:
            return "catching_up"
        return "recording"

    def status(self) -> rc.RecorderStatus:
        detail = ""
        if self.state == "redis_down":
            detail = "Redis is unreachable"
        elif self.disk_error is not None:
            detail = self.disk_error
        return rc.RecorderStatus(
            instance=self.instance,
            state=self.state,
            detail=detail,
            frames_recorded=self.frames_recorded,
            last_recorded_id=self.last_recorded_id,
            last_received_ms=self.last_received_ms,
            lag_frames=self.lag_frames,
            gaps=self.gaps,
            updated_at=time.time(),
        )

    def readiness(self) -> tuple[bool, str]:
        state = self.state
        return state in ("recording", "catching_up"), state

    # ---- main --------------------------------------------------------------------------------

    async def _main(self) -> None:
        await self._scan_disk()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.link.run())
            group.create_task(self._consume())
            group.create_task(self._report())
            group.create_task(self._housekeeping())

    async def _scan_disk(self) -> None:
        """Learn what is on disk before reading the stream; retried while the disk fails."""
        while True:
            try:
                newest = await asyncio.to_thread(self.store.recover)
                last = await asyncio.to_thread(self.store.last_frame)
                known = await asyncio.to_thread(self.store.recorded_gaps)
            except OSError as error:
                self._disk_failed(error)
                await asyncio.sleep(self.settings.recorder_retry_seconds)
                continue
            break
        self._disk_recovered()
        self.last_recorded_id = newest
        if last is not None:
            self.last_received_ms = last.received_ms
            self._detector.observe(last)
        self._known_gaps = known
        self.gaps = len(known)
        self.started = True
        logger.info("recorder %s: newest frame on disk %s", self.instance, newest or "(none)")

    async def _consume(self) -> None:
        while True:
            await self.link.wait_up()
            try:
                await self._consume_once()
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                logger.warning("the record stream's group is gone (Redis lost it): creating it")
                self._group_ready = False
            except REDIS_ERRORS as error:
                self.link.failed(error)

    async def _consume_once(self) -> None:
        client = self.link.client
        if not self._group_ready:
            await self._ensure_group()
        if self._unacked:
            await self._ack(self._unacked)
            self._unacked = []
        full = len(self.buffer) >= self.settings.recorder_max_buffer_frames
        due = self.buffer and (
            time.monotonic() >= self._flush_due
            or len(self.buffer) >= self.settings.recorder_flush_frames
        )
        if due or full:
            if not await self._flush() and full:
                await asyncio.sleep(self.settings.recorder_retry_seconds)
            return
        room = self.settings.recorder_max_buffer_frames - len(self.buffer)
        count = min(READ_COUNT, room)
        reply: Any
        if self._catching_up:
            reply = await guarded(
                client.xreadgroup(
                    rc.RECORD_GROUP,
                    self.instance,
                    {rc.RECORD_STREAM: self._pending_from},
                    count=count,
                )
            )
        else:
            wait = max(0.0, self._flush_due - time.monotonic()) if self.buffer else 1.0
            reply = await guarded(
                client.xreadgroup(
                    rc.RECORD_GROUP,
                    self.instance,
                    {rc.RECORD_STREAM: ">"},
                    count=count,
                    block=max(1, int(min(wait, 1.0) * 1000)),
                )
            )
        entries: list[tuple[Any, Any]] = list(reply[0][1]) if reply else []
        if self._catching_up and not entries:
            self._catching_up = False
            logger.info("recorder %s: pending entries re-read; reading new ones", self.instance)
        await self._take(entries)

    async def _ensure_group(self) -> None:
        try:
            await guarded(
                self.link.client.xgroup_create(
                    rc.RECORD_STREAM, rc.RECORD_GROUP, id="0", mkstream=True
                )
            )
            logger.info("created the record stream's consumer group")
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True
        self._catching_up = True
        self._pending_from = "0"

    async def _take(self, entries: list[tuple[Any, Any]]) -> None:
        skip: list[str] = []
        high = self.last_recorded_id
        for raw_id, fields in entries:
            stream_id = as_text(raw_id)
            if self._catching_up:
                self._pending_from = stream_id
            if not fields:
                # Trimmed after delivery: its frame is lost, the counter's jump reports it.
                skip.append(stream_id)
            elif high is not None and stream_id_key(stream_id) <= stream_id_key(high):
                skip.append(stream_id)  # on disk already: written before a crash, not acked
            else:
                self.buffer.append(decode_entry(stream_id, fields))
        if skip:
            logger.info("acknowledging %d entries already on disk or trimmed", len(skip))
            await self._ack(skip)

    async def _flush(self) -> bool:
        """Write the buffer and acknowledge it; False (buffer kept) when the disk fails."""
        batch = list(self.buffer)
        detector = self._detector.copy()
        found = [gap for frame in batch if (gap := detector.observe(frame)) is not None]
        fresh = [gap for gap in found if gap.key() not in self._known_gaps]
        try:
            await asyncio.to_thread(self.store.append_gaps, fresh)
            written = await asyncio.to_thread(self.store.write, batch)
        except OSError as error:
            self._disk_failed(error)
            self._flush_due = time.monotonic() + self.settings.recorder_retry_seconds
            return False
        self._disk_recovered()
        self._detector = detector
        for gap in fresh:
            self._gap_found(gap)
        del self.buffer[: len(batch)]
        self.frames_recorded += written.frames
        self.ticks_recorded += written.ticks
        self.bytes_written += written.bytes
        self.last_recorded_id = batch[-1].stream_id
        self.last_received_ms = batch[-1].received_ms
        self._flush_due = time.monotonic() + self.settings.recorder_flush_seconds
        ids = [frame.stream_id for frame in batch]
        try:
            await self._ack(ids)
        except REDIS_ERRORS:
            self._unacked.extend(ids)  # on disk: acked once Redis is back
            raise
        finally:
            self._wrote.set()
            self._wrote = asyncio.Event()
            await self._compact_touched(batch)
        return True

    async def _compact_touched(self, batch: list[StreamFrame]) -> None:
        limit = self.settings.recorder_compact_files
        days = {dt.datetime.fromtimestamp(f.received_ms / 1000, IST).date() for f in batch}
        for day in sorted(days):
            try:
                if await asyncio.to_thread(self.store.file_count, day.isoformat()) > limit:
                    await asyncio.to_thread(self.store.compact, day.isoformat(), limit)
            except OSError as error:
                logger.warning("compaction of %s failed (kept as is): %s", day, error)

    async def _ack(self, ids: list[str]) -> None:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            await guarded(self.link.client.xack(rc.RECORD_STREAM, rc.RECORD_GROUP, *chunk))

    def _disk_failed(self, error: OSError) -> None:
        self.write_errors += 1
        if self.disk_error is None:
            logger.error(
                "cannot write the recording under %s: %s; keeping %d frames unacknowledged "
                "and retrying every %.0f s",
                self.store.root,
                error,
                len(self.buffer),
                self.settings.recorder_retry_seconds,
            )
        self.disk_error = f"{type(error).__name__}: {error}"

    def _disk_recovered(self) -> None:
        if self.disk_error is not None:
            logger.info("the recording is writable again (after: %s)", self.disk_error)
            self.disk_error = None

    def _gap_found(self, gap: Gap) -> None:
        self._known_gaps.add(gap.key())
        self.gaps += 1
        self.gap_frames += gap.missing
        logger.warning(
            "gap in the recording: %d frames of %s missing (n %d..%d, between %s and %s)",
            gap.missing,
            gap.instance,
            gap.from_n + 1,
            gap.to_n - 1,
            gap.before_id,
            gap.after_id,
        )

    async def wait_written(self) -> None:
        """Until the next successful flush (tests)."""
        await self._wrote.wait()

    # ---- status and housekeeping -------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            if self.link.ok:
                try:
                    await self._report_once()
                except REDIS_ERRORS as error:
                    self.link.failed(error)
            await asyncio.sleep(STATUS_EVERY)

    async def _report_once(self) -> None:
        client = self.link.client
        try:
            groups = await guarded(client.xinfo_groups(rc.RECORD_STREAM))
        except ResponseError:
            groups = []  # no stream yet
        for group in groups:
            if as_text(group.get("name", b"")) == rc.RECORD_GROUP:
                lag = group.get("lag")
                self.lag_frames = None if lag is None else int(lag) + len(self.buffer)
        payload = self.status().model_dump_json()
        await guarded(client.set(rc.RECORDER_STATUS, payload, px=STATUS_TTL_MS))

    async def _housekeeping(self) -> None:
        while True:
            today = dt.datetime.now(IST).date().isoformat()
            try:
                await asyncio.to_thread(
                    self.store.apply_retention, today, self.settings.recorder_retention_days
                )
            except OSError as error:
                logger.warning("retention failed (retried in an hour): %s", error)
            await asyncio.sleep(HOUSEKEEPING_EVERY)
