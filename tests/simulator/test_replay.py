"""The simulator replaying a recording (`--replay`): the fixture in tests/fixtures/recording,
made by scripts/record-fixture from the simulator itself, served to a plain WebSocket client
that authorizes through the simulator's REST as Upstox documents."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import websockets
from google.protobuf.json_format import MessageToDict
from websockets.asyncio.client import ClientConnection

from shared.instruments import Mode
from shared.proto import pb
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


@pytest.mark.parametrize("replaying", [{"simulator_replay_speed": 20.0}], indirect=True)
async def test_unrecorded_key_gets_nothing_and_login_works(replaying: SimulatorHandle) -> None:
    want = data_frames()
    key = recorded_keys()[0]
    ws = await subscribed(replaying, [key, NOT_RECORDED], "full")
    async with ws:
        got = await live_frames(ws, len(want))
        assert all(set(frame.feeds) == {key} for frame in got)
        # The replay is over: the feed stays connected, and a snapshot is the key's latest
        # value made whole from the partial ticks.
        await send(ws, "sub", [recorded_keys()[1]], "full")
        snapshot = await next_frame(ws, within=30.0)
        with pytest.raises(TimeoutError):
            await next_frame(ws, within=1.0)
    assert snapshot.type == pb.initial_feed
    other = recorded_keys()[1]
    whole: pb.Feed | None = None
    for frame in want:
        if other in frame.feeds:
            update = frame.feeds[other]
            whole = update if whole is None else merge_feed(whole, update)
    assert whole is not None
    assert without_ltt(MessageToDict(snapshot.feeds[other])) == without_ltt(MessageToDict(whole))
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
