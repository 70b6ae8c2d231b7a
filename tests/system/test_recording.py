"""The recording end to end, on `tickstream dev`'s real processes: the ticks a client watches are
recorded; the recorder SIGKILLed for a minute loses none of that minute; an ingestor failover
leaves no gap; and a recording replayed by the simulator reaches a client through the whole
system value for value, in the recorded order."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from tickstream_client import Feed, Update, connect

from services.simulator.replay import load_frames
from shared.proto import pb
from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(420)

RELIANCE = "NSE_EQ|INE002A01018"
FIXTURE = Path(__file__).parent.parent / "fixtures" / "recording"
FAST_RECORDING = {"RECORDER_FLUSH_SECONDS": "1"}

Pair = tuple[int, float]  # (ltt in epoch ms, ltp): one trade, as a client and the recording say


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1, overrides=FAST_RECORDING) as running:
        yield running


def now_ms() -> int:
    return int(time.time() * 1000)


async def watch(feed: Feed, seconds: float) -> list[Update]:
    """The live updates `feed` gets in the next `seconds`."""
    seen: list[Update] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            async for update in feed:
                if not update.snapshot:
                    seen.append(update)
    return seen


def trades(updates: list[Update]) -> set[Pair]:
    return {(u.ltt, u.ltp) for u in updates if u.ltt and u.ltp is not None}


async def recorded(stack: Stack, key: str, start_ms: int, end_ms: int) -> set[Pair]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as web:
        answer = await web.get(
            f"{stack.front_url}/api/ticks/{key}",
            params={"from": str(start_ms), "to": str(end_ms), "limit": 100_000},
        )
    answer.raise_for_status()
    body = answer.json()
    assert body["truncated"] is False
    return {(_epoch_ms(tick["ts"]), tick["ltp"]) for tick in body["ticks"]}


async def gaps(stack: Stack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as web:
        answer = await web.get(f"{stack.front_url}/api/recording/gaps")
    answer.raise_for_status()
    found: list[dict[str, Any]] = answer.json()["gaps"]
    return found


def _epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


async def all_recorded(stack: Stack, seen: set[Pair], start_ms: int, what: str) -> None:
    async def complete() -> bool:
        found = await recorded(stack, RELIANCE, start_ms - 60_000, now_ms() + 60_000)
        return seen <= found

    await eventually(complete, what, within=60)


async def test_the_ticks_a_client_watches_are_recorded(stack: Stack) -> None:
    start = now_ms()
    async with connect(stack.front_ws_url) as feed:
        await feed.subscribe([RELIANCE], "full")
        seen = trades(await watch(feed, 6))
    assert len(seen) >= 3, "the simulator sent too little to compare"
    await all_recorded(stack, seen, start, "every watched tick in the recording")


async def test_the_recorder_killed_for_a_minute_loses_nothing_of_it(stack: Stack) -> None:
    before = stack.pids()
    start = now_ms()
    async with connect(stack.front_ws_url) as feed:
        await feed.subscribe([RELIANCE], "full")
        await stack.akill("recorder")
        try:
            seen = trades(await watch(feed, 60))
        finally:
            await stack.astart("recorder")
    stack.assert_survivors(before, killed="recorder")
    assert len(seen) >= 30
    await all_recorded(stack, seen, start, "every tick of the minute the recorder was down")
    assert await gaps(stack) == []


async def test_an_ingestor_failover_leaves_no_gap(stack: Stack) -> None:
    active = await eventually(stack.active_ingestor, "an active ingestor")
    start = now_ms()
    async with connect(stack.front_ws_url) as feed:
        await feed.subscribe([RELIANCE], "full")
        before = trades(await watch(feed, 3))
        await stack.akill(active)
        try:
            await eventually(
                lambda: _other_active(stack, active), "the standby taking over", within=60
            )
            after = trades(await watch(feed, 6))
        finally:
            await stack.astart(active)
    assert before and after
    await all_recorded(stack, before | after, start, "the ticks before and after the failover")
    assert await gaps(stack) == []


async def _other_active(stack: Stack, old: str) -> bool:
    holder = await stack.active_ingestor()
    return holder is not None and holder != old


def _without_times(value: dict[str, Any]) -> dict[str, Any]:
    """A feed's value less its trade times (the replay moves them to now)."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "ltt"}
    return value


async def test_a_replayed_recording_reaches_a_client_as_recorded() -> None:
    frames = load_frames(FIXTURE)
    recorded_values: dict[str, list[dict[str, Any]]] = {}
    for frame in frames:
        response = pb.FeedResponse.FromString(frame.data)
        if response.type == pb.live_feed:
            for key, value in response.feeds.items():
                recorded_values.setdefault(key, []).append(_without_times(MessageToDict(value)))
    keys = sorted(recorded_values)
    overrides = {"SIMULATOR_REPLAY": str(FIXTURE), **FAST_RECORDING}
    with running_stack(gateways=1, overrides=overrides) as replayed:
        async with connect(replayed.front_ws_url) as feed:
            await feed.subscribe(keys, "full")
            seen = await watch(feed, 30)
    received: dict[str, list[dict[str, Any]]] = {}
    for update in seen:
        received.setdefault(update.key, []).append(_without_times(dict(update.raw)))
    assert set(received) == set(keys)
    for key in keys:
        got, want = received[key], recorded_values[key]
        assert len(got) >= 5, f"{key}: too few updates"
        # The client joined the replay at some point: from there on, every value in order.
        starts = [i for i in range(len(want)) if want[i : i + len(got)] == got]
        assert starts, f"{key}: {got} is not a run of the recording {want}"
