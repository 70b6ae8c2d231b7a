"""Replay: the simulator's feed served from a recording (`shared.recording`'s frames table)
instead of the market model, so demos, tests and benchmarks can run on a recorded day.

Only the source of feed data changes; login, REST and the feed protocol are the simulator's own
(`ReplayHub` is a `FeedHub` whose loop plays frames instead of ticking the model). Frames are
served in stream order with their recorded spacing divided by the speed, their `currentTs` and
every `ltt` moved by one offset (now minus the first frame's receipt, fixed at the start of each
pass), nothing else changed. Each connection gets what Upstox would send it: only its keys, each
in its mode (a richer recorded feed projected down with `project_feed`; a poorer one gives that
key nothing), spliced into frames as the live simulator does. A new subscription first gets an
`initial_feed` of the latest whole value of its keys so far (partial ticks merged).

The first pass starts at the first subscription, not at start-up, so that the first client (the
ingestor, a test) sees the recording from its beginning. Frames before `--from` are not served,
but they make the snapshots' latest values. The market's status comes from the recording's
market_info frames (after the model's own at connect, which the protocol sends first).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.simulator import feed as live
from services.simulator import frames
from services.simulator.accounts import User
from services.simulator.clock import now_ms
from services.simulator.settings import SimulatorSettings
from shared.instruments import Mode
from shared.ist import IST
from shared.proto import pb
from shared.recording import FRAMES, FRAMES_SCHEMA
from shared.render import ProjectionError, merge_feed, project_feed

logger = logging.getLogger(__name__)

_COLUMNS = ("stream_id", "received", "data")


class ReplayError(Exception):
    """The recording cannot be replayed (missing, unreadable, empty); the message says why."""


@dataclass(frozen=True)
class RecordedFrame:
    stream_id: str
    received_ms: int
    data: bytes


def frame_files(path: Path) -> list[Path]:
    """The frames files of a recording root, in stream order, or `path` itself (one file)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ReplayError(f"{path}: no such recording (neither a directory nor a file)")
    # Days sort by name, and files within a day by their zero-padded stream-id range.
    files = sorted((path / FRAMES).glob("day=*/*.parquet"))
    if not files:
        raise ReplayError(f"{path}: no recorded frames (no {FRAMES}/day=*/*.parquet)")
    return files


def load_frames(path: Path) -> list[RecordedFrame]:
    """Every recorded frame under `path`, in stream order, each stream id once (a compaction
    may briefly leave a frame in two files)."""
    seen: set[str] = set()
    out: list[RecordedFrame] = []
    for file in frame_files(path):
        try:
            table = pq.read_table(file, columns=list(_COLUMNS))
        except (OSError, pa.ArrowException, ValueError, KeyError) as error:
            raise ReplayError(f"{file}: not a readable frames file: {error}") from None
        received = table.column("received")
        if received.type != FRAMES_SCHEMA.field("received").type:
            received = received.cast(FRAMES_SCHEMA.field("received").type)
        ids = table.column("stream_id").to_pylist()
        times = received.cast(pa.int64()).to_pylist()
        datas = table.column("data").to_pylist()
        for stream_id, received_ms, data in zip(ids, times, datas, strict=True):
            if stream_id in seen or received_ms is None or data is None:
                continue
            seen.add(stream_id)
            out.append(RecordedFrame(stream_id, received_ms, data))
    if not out:
        raise ReplayError(f"{path}: the recording holds no frames")
    return out


def parse_from(text: str, first_received_ms: int) -> int:
    """`--from`'s time as epoch ms: ISO 8601 (no offset: IST) or HH:MM[:SS] in IST on the day
    of the first recorded frame."""
    text = text.strip()
    try:
        clock = dt.time.fromisoformat(text)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ReplayError(f"--from {text!r}: not ISO 8601 nor HH:MM") from None
    else:
        day = dt.datetime.fromtimestamp(first_received_ms / 1000, IST).date()
        moment = dt.datetime.combine(day, clock)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    return round(moment.timestamp() * 1000)


def _ltpcs(feed: pb.Feed) -> Iterator[pb.LTPC]:
    """The LTPC messages `feed` carries (the ones holding an `ltt`)."""
    branch = feed.WhichOneof("FeedUnion")
    if branch == "ltpc":
        yield feed.ltpc
    elif branch == "firstLevelWithGreeks":
        if feed.firstLevelWithGreeks.HasField("ltpc"):
            yield feed.firstLevelWithGreeks.ltpc
    elif branch == "fullFeed":
        full = feed.fullFeed
        for body in (full.indexFF, full.marketFF):
            if body.HasField("ltpc"):
                yield body.ltpc


def shift_feed(feed: pb.Feed, offset_ms: int) -> None:
    """Move `feed`'s last trade times by `offset_ms` in place (an absent ltt stays absent)."""
    for ltpc in _ltpcs(feed):
        if ltpc.ltt:
            ltpc.ltt += offset_ms


class ReplayHub(live.FeedHub):
    """A `FeedHub` whose data comes from recorded frames (`load_frames`)."""

    def __init__(
        self,
        recorded: list[RecordedFrame],
        speed: float = 1.0,
        start_ms: int | None = None,
        loop: bool = False,
        **hub: Any,
    ) -> None:
        super().__init__(**hub)
        self.speed = speed
        self.loop = loop
        # Frames before --from are not served, but they make the snapshots' latest values.
        start = recorded[0].received_ms if start_ms is None else start_ms
        self._before = [f for f in recorded if f.received_ms < start]
        self._frames = [f for f in recorded if f.received_ms >= start]
        if not self._frames:
            raise ReplayError("no recorded frame at or after --from")
        self._latest: dict[str, pb.Feed] = {}  # key -> whole latest value (shifted)
        self._market_info: bytes | None = None
        self._warned: set[tuple[str, Mode]] = set()
        self.passes = 0
        self.frames_played = 0

    def register(self, user: User, token: str) -> live.FeedConnection:
        conn = super().register(user, token)
        if self._market_info is not None:  # the recorded market status, after the model's
            conn.offer_control(self._market_info)
        return conn

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The recording starts playing at the first subscription, so that whoever connects first
        # (the ingestor, a test) sees it from its beginning.
        logger.info("replay of %d frames waits for the first subscription", len(self._frames))
        while not self._current_demand():
            await self._serve_until(loop.time() + 1.0, stop=self._current_demand)
        logger.info("replay starts: the first subscription arrived")
        while True:
            self.passes += 1
            offset = now_ms() - self._frames[0].received_ms
            self._latest.clear()
            for frame in self._before:
                self._remember(frame, offset)
            started, first = loop.time(), self._frames[0].received_ms
            logger.info(
                "replay pass %d: %d frames at %gx", self.passes, len(self._frames), self.speed
            )
            for frame in self._frames:
                due = started + (frame.received_ms - first) / 1000.0 / self.speed
                await self._serve_until(due)
                try:
                    self._play(frame, offset)
                except Exception:  # one bad frame must not end the replay
                    logger.exception("cannot replay frame %s; skipping it", frame.stream_id)
            if not self.loop:
                logger.info("replay finished: the feed stays connected and sends no more data")
                while True:
                    await self._serve_until(loop.time() + 3600.0)
            logger.info("replay finished; starting over (--loop)")

    async def _serve_until(self, due: float, stop: Callable[[], object] | None = None) -> None:
        """Answer snapshots and housekeeping until the loop's time `due` (or `stop()`)."""
        loop = asyncio.get_running_loop()
        while stop is None or not stop():
            now = self.market_now()
            try:
                self._housekeeping(now)
                if now >= self.stalled_until_ms:
                    self._send_snapshots(now)
            except Exception:
                logger.exception("replay housekeeping failed")
            wait = due - loop.time()
            if wait <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, 1.0))

    def _housekeeping(self, now: int) -> None:
        # The market's status comes from the recording (its market_info frames), not the model.
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + live.HOUSEKEEPING_MS
            self.close_for_invalid_tokens()

    def _remember(self, frame: RecordedFrame, offset: int) -> pb.FeedResponse:
        response = pb.FeedResponse()
        response.ParseFromString(frame.data)
        if response.currentTs:
            response.currentTs += offset
        if response.type == pb.market_info:
            self._market_info = response.SerializeToString()
            return response
        for key, feed in response.feeds.items():
            shift_feed(feed, offset)
            previous = self._latest.get(key)
            self._latest[key] = merge_feed(previous, feed) if previous is not None else feed
        return response

    def _play(self, frame: RecordedFrame, offset: int) -> None:
        response = self._remember(frame, offset)
        now = self.market_now()
        if now < self.stalled_until_ms:
            return
        self.frames_played += 1
        if response.type == pb.market_info:
            assert self._market_info is not None
            for conn in self.connections.values():
                if conn.silent_until_ms <= now:
                    conn.offer_control(self._market_info)
            return
        current = response.currentTs or now
        entries: dict[tuple[str, Mode], bytes | None] = {}
        built: dict[frozenset[tuple[str, Mode]], list[tuple[bytes, int]]] = {}
        for conn in self.connections.values():
            if conn.silent_until_ms > now:
                continue
            signature = conn.subscriptions.signature
            batch = built.get(signature)
            if batch is None:
                parts: list[bytes] = []
                for key, mode in conn.subscriptions.active_pairs:
                    if key not in response.feeds:
                        continue
                    if (key, mode) not in entries:
                        entries[(key, mode)] = self._entry(key, response.feeds[key], mode)
                    part = entries[(key, mode)]
                    if part is not None:
                        parts.append(part)
                batch = [
                    (frames.live_frame(chunk, current), len(chunk)) for chunk in live._chunks(parts)
                ]
                built[signature] = batch
            for data, count in batch:
                conn.offer_live(data, count)

    def _entry(self, key: str, feed: pb.Feed, mode: Mode) -> bytes | None:
        """`feed` as a `feeds` entry in `mode`; None (logged once) when it was recorded poorer."""
        try:
            return frames.feed_entry(key, project_feed(feed, mode))
        except ProjectionError as error:
            if (key, mode) not in self._warned:
                self._warned.add((key, mode))
                logger.warning("replay: %s asked in %s gets nothing: %s", key, mode, error)
            return None

    def _send_snapshots(self, now: int) -> None:
        for conn in self.connections.values():
            if not conn.pending_snapshot or conn.silent_until_ms > now:
                continue
            keys, conn.pending_snapshot = conn.pending_snapshot, []
            active = conn.subscriptions.active
            parts = []
            for key in keys:
                if key in active and key in self._latest:
                    part = self._entry(key, self._latest[key], active[key])
                    if part is not None:
                        parts.append(part)
            for chunk in live._chunks(parts):
                conn.offer_control(frames.initial_frame(chunk, now))
                conn.feeds_offered += len(chunk)

    def stats(self) -> dict[str, object]:
        return {
            **super().stats(),
            "replay_passes": self.passes,
            "replay_frames_played": self.frames_played,
            "replay_frames": len(self._frames),
        }


def replay_hub(settings: SimulatorSettings) -> Callable[..., live.FeedHub]:
    """`FeedHub`'s constructor replaced by a `ReplayHub` of `settings.simulator_replay` (read
    now, so that a bad recording stops the start with a `ReplayError`)."""
    path = settings.simulator_replay
    if path is None:
        raise ReplayError("no recording to replay")
    recorded = load_frames(path)
    start = settings.simulator_replay_from
    logger.info("replaying %d recorded frames from %s", len(recorded), path)
    return functools.partial(
        ReplayHub,
        recorded,
        speed=settings.simulator_replay_speed,
        start_ms=None if start is None else parse_from(start, recorded[0].received_ms),
        loop=settings.simulator_replay_loop,
    )
