"""The simulator replaying a recording (`--replay`): the fixture in tests/fixtures/recording,
made by scripts/record-fixture from the simulator itself, served to a plain WebSocket client
that authorizes through the simulator's REST as Upstox documents."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import websockets
from google.protobuf.json_format import MessageToDict
from websockets.asyncio.client import ClientConnection

from services.simulator.replay import ReplayError, load_frames, parse_from
from shared.instruments import Mode
from shared.ist import IST
from shared.proto import pb
from shared.recording import file_stem
from shared.render import merge_feed, project_feed
from tests.simulator.helpers import authorized_url, next_frame, send
from tests.support.simulator import SimulatorHandle, running_simulator

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "recording"
NOT_RECORDED = "NSE_EQ|INE009A01021"  # in the simulator's universe, not in the fixture


def recorded() -> list[pb.FeedResponse]:
    """The fixture's frames, in stream order."""
    files = sorted(FIXTURE.glob("frames/day=*/*.parquet"))
    assert files, "the fixture is missing: run scripts/record-fixture"
    out = []
    for file in files:
        for data in pq.read_table(file, columns=["data"]).column("data").to_pylist():
            out.append(pb.FeedResponse.FromString(data))
    return out


def data_frames() -> list[pb.FeedResponse]:
    return [frame for frame in recorded() if frame.type != pb.market_info]


def recorded_keys() -> list[str]:
    return sorted({key for frame in data_frames() for key in frame.feeds})


def ltts(value: Any) -> list[int]:
    """Every `ltt` in a MessageToDict value."""
    found: list[int] = []
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "ltt":
                found.append(int(item))
            else:
                found.extend(ltts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(ltts(item))
    return found


def without_ltt(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: without_ltt(item) for name, item in value.items() if name != "ltt"}
    if isinstance(value, list):
        return [without_ltt(item) for item in value]
    return value


def feeds_of(frame: pb.FeedResponse, mode: Mode | None = None) -> dict[str, Any]:
    """The frame's feeds as MessageToDict values (projected to `mode`)."""
    return {
        key: MessageToDict(feed if mode is None else project_feed(feed, mode))
        for key, feed in frame.feeds.items()
    }


@pytest.fixture
async def replaying(request: pytest.FixtureRequest) -> AsyncIterator[SimulatorHandle]:
    options: dict[str, Any] = {"simulator_replay": FIXTURE, **getattr(request, "param", {})}
    async with running_simulator(**options) as sim:
        yield sim


async def subscribed(sim: SimulatorHandle, keys: list[str], mode: str) -> ClientConnection:
    ws = await websockets.connect(await authorized_url(sim, sim.demo_token))
    await send(ws, "sub", keys, mode)
    return ws


async def live_frames(ws: ClientConnection, count: int) -> list[pb.FeedResponse]:
    """The next `count` frames carrying feeds (market status frames skipped)."""
    out: list[pb.FeedResponse] = []
    while len(out) < count:
        frame = await next_frame(ws, within=30.0)
        if frame.type != pb.market_info:
            out.append(frame)
    return out


def assert_replayed(
    got: list[pb.FeedResponse], want: list[pb.FeedResponse], mode: Mode | None = None
) -> int:
    """`got` is `want` frame by frame, values equal but for ltt and currentTs, each moved by
    one offset; returns that offset."""
    offsets: set[int] = set()
    for index, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        assert mine.type == pb.live_feed
        mine_feeds, their_feeds = feeds_of(mine), feeds_of(theirs, mode)
        assert without_ltt(mine_feeds) == without_ltt(their_feeds), f"frame {index}"
        for key in their_feeds:
            for a, b in zip(ltts(mine_feeds[key]), ltts(their_feeds[key]), strict=True):
                offsets.add(a - b)
        offsets.add(mine.currentTs - theirs.currentTs)
    assert len(offsets) == 1, f"timestamps moved by different offsets: {sorted(offsets)[:5]}"
    (offset,) = offsets
    assert offset > 0  # moved to now, from a recording made earlier
    return offset


@pytest.mark.parametrize("replaying", [{"simulator_replay_speed": 4.0}], indirect=True)
async def test_full_client_gets_the_recorded_values_in_order(replaying: SimulatorHandle) -> None:
    want = data_frames()
    ws = await subscribed(replaying, recorded_keys(), "full")
    async with ws:
        assert_replayed(await live_frames(ws, len(want)), want)


@pytest.mark.parametrize("replaying", [{"simulator_replay_speed": 10.0}], indirect=True)
async def test_ltpc_client_gets_the_ltpc_projection(replaying: SimulatorHandle) -> None:
    want = data_frames()
    ws = await subscribed(replaying, recorded_keys(), "ltpc")
    async with ws:
        got = await live_frames(ws, len(want))
    assert_replayed(got, want, Mode.LTPC)
    assert all(set(feed) == {"ltpc"} for frame in got for feed in feeds_of(frame).values())


@pytest.mark.parametrize("replaying", [{"simulator_replay_speed": 10.0}], indirect=True)
async def test_speed_keeps_every_frame_in_order(replaying: SimulatorHandle) -> None:
    want = data_frames()
    ws = await subscribed(replaying, recorded_keys(), "full")
    async with ws:
        assert_replayed(await live_frames(ws, len(want)), want)
        stats = await replaying.stats()
    assert stats["replay_frames_played"] >= len(want)


@pytest.mark.parametrize(
    "replaying", [{"simulator_replay_speed": 50.0, "simulator_replay_loop": True}], indirect=True
)
async def test_loop_starts_over_with_a_new_offset(replaying: SimulatorHandle) -> None:
    want = data_frames()
    ws = await subscribed(replaying, recorded_keys(), "full")
    async with ws:
        got = await live_frames(ws, 2 * len(want))
    first = assert_replayed(got[: len(want)], want)
    second = assert_replayed(got[len(want) :], want)
    assert second > first


def latest_values(frames: list[pb.FeedResponse]) -> tuple[dict[str, pb.Feed], dict[str, pb.Feed]]:
    """Each key's last recorded feed, and its latest value made whole (partial ticks merged)."""
    last: dict[str, pb.Feed] = {}
    whole: dict[str, pb.Feed] = {}
    for frame in frames:
        for key, feed in frame.feeds.items():
            last[key] = feed
            whole[key] = merge_feed(whole[key], feed) if key in whole else feed
    return last, whole


@pytest.mark.parametrize("replaying", [{"simulator_replay_speed": 20.0}], indirect=True)
async def test_unrecorded_key_gets_nothing_and_login_works(replaying: SimulatorHandle) -> None:
    want = data_frames()
    last, whole = latest_values(want)
    # a key whose last recorded tick is partial: its snapshot must be merged to be whole
    partial = [key for key in last if MessageToDict(last[key]) != MessageToDict(whole[key])]
    assert partial, "the fixture has no partial tick at its end"
    key = next(key for key in recorded_keys() if key != partial[0])
    ws = await subscribed(replaying, [key, NOT_RECORDED], "full")
    async with ws:
        got = await live_frames(ws, len(want))
        assert all(set(frame.feeds) == {key} for frame in got)
        # The replay is over: the feed stays connected, and a snapshot is the key's latest
        # value made whole from the partial ticks.
        await send(ws, "sub", [partial[0]], "full")
        snapshot = await next_frame(ws, within=30.0)
        with pytest.raises(TimeoutError):
            await next_frame(ws, within=1.0)
    assert snapshot.type == pb.initial_feed
    assert set(snapshot.feeds) == {partial[0]}
    assert without_ltt(MessageToDict(snapshot.feeds[partial[0]])) == without_ltt(
        MessageToDict(whole[partial[0]])
    )
    token = await replaying.login()
    assert token["access_token"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "simulator", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty"])
def test_a_bad_recording_stops_the_start_clearly(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "recording"
    if kind == "corrupt":
        broken = path / "frames" / "day=2026-01-05" / "x.parquet"
        broken.parent.mkdir(parents=True)
        broken.write_bytes(b"not parquet at all")
    elif kind == "empty":
        path.mkdir()
    result = run_cli("--replay", str(path))
    assert result.returncode != 0
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def fixture_rows() -> list[tuple[str, int]]:
    """(stream id, received ms) of the fixture's frames."""
    (file,) = sorted(FIXTURE.glob("frames/day=*/*.parquet"))
    table = pq.read_table(file, columns=["stream_id", "received"])
    times = table.column("received").cast(pa.int64()).to_pylist()
    return list(zip(table.column("stream_id").to_pylist(), times, strict=True))


def test_load_frames_reads_in_stream_order_each_frame_once(tmp_path: Path) -> None:
    (file,) = sorted(FIXTURE.glob("frames/day=*/*.parquet"))
    table = pq.read_table(file)
    rows = table.num_rows
    day = tmp_path / "frames" / file.parent.name
    day.mkdir(parents=True)
    ids = table.column("stream_id").to_pylist()
    # Two files overlapping on the middle frames, as a compaction may briefly leave them.
    first, second = table.slice(0, rows // 2 + 5), table.slice(rows // 2)
    pq.write_table(first, day / f"{file_stem(ids[0], ids[rows // 2 + 4])}.parquet")
    pq.write_table(second, day / f"{file_stem(ids[rows // 2], ids[-1])}.parquet")
    loaded = load_frames(tmp_path)
    assert [frame.stream_id for frame in loaded] == ids
    assert [frame.stream_id for frame in load_frames(file)] == ids


def test_from_takes_iso_or_ist_clock_time() -> None:
    first = round(dt.datetime(2026, 1, 5, 9, 14, 59, tzinfo=IST).timestamp() * 1000)
    nine_fifteen = round(dt.datetime(2026, 1, 5, 9, 15, tzinfo=IST).timestamp() * 1000)
    assert parse_from("09:15", first) == nine_fifteen
    assert parse_from("2026-01-05T09:15:00", first) == nine_fifteen
    assert parse_from("2026-01-05T03:45:00+00:00", first) == nine_fifteen
    with pytest.raises(ReplayError):
        parse_from("soon", first)


async def test_from_skips_the_frames_received_before() -> None:
    rows = fixture_rows()
    frames = recorded()
    middle = len(rows) // 2
    start = dt.datetime.fromtimestamp(rows[middle][1] / 1000, IST).isoformat()
    want = [frame for frame in frames[middle:] if frame.type != pb.market_info]
    options: dict[str, Any] = {"simulator_replay_speed": 10.0, "simulator_replay_from": start}
    async with running_simulator(simulator_replay=FIXTURE, **options) as sim:
        ws = await subscribed(sim, recorded_keys(), "full")
        async with ws:
            got: list[pb.FeedResponse] = []
            while len(got) < len(want):
                frame = await next_frame(ws, within=30.0)
                if frame.type == pb.live_feed:
                    got.append(frame)
    assert_replayed(got, want)
