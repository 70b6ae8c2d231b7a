"""When frames go out: at once when the gateway is idle, shared while it is busy, never past the
bound (`fanout.FlushPacer`, applied by the hub). Counted in event-loop passes, never timed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.gateway.fanout import (
    BUSY_LOAD,
    IDLE_LOAD,
    LOAD_SAMPLE,
    OVERDUE,
    FanOut,
    FlushPacer,
    Subscriber,
)
from services.gateway.hub import Hub
from services.gateway.protocol import INITIAL_FEED, LIVE_FEED, FeedItem, feed_frame, key_json
from services.gateway.wires import JSON, UPSTOX
from services.gateway.wsframe import text_frame
from shared import redis_contract as rc
from shared.feed_frames import entry_bytes, initial_frame, live_frame
from shared.instruments import Mode
from tests.gateway.conftest import BANK, NIFTY, RELIANCE, Client, StartGateway, client, eventually

BOUND = 0.005


SAMPLES = 40
LAST_SAMPLE = 100.0 + SAMPLES * LOAD_SAMPLE


def loaded(load: float) -> FlushPacer:
    """A pacer that has seen the process use `load` of a core, sample after sample."""
    pacer = FlushPacer(BOUND)
    for n in range(SAMPLES + 1):
        pacer.observe(100.0 + n * LOAD_SAMPLE, 10.0 + n * load * LOAD_SAMPLE)
    return pacer


# ---- the pure policy --------------------------------------------------------------------------


def test_an_idle_gateway_flushes_after_one_pass_brings_nothing_new() -> None:
    pacer = FlushPacer(BOUND)
    assert pacer.begin(1.0) == 0
    assert not pacer.due(1.0, 7)  # the pass that began it: the read may go on in the next
    assert pacer.due(1.0, 7)  # a pass with no new tick: out now


def test_a_bound_of_zero_flushes_after_every_pass() -> None:
    pacer = FlushPacer(0.0)
    assert pacer.begin(1.0) == 0
    assert pacer.due(1.0, 7)  # no waiting for a quiet pass either
    pacer.begin(1.0)
    assert pacer.due(1.0, 8)


def test_ticks_arriving_pass_after_pass_share_a_frame_until_the_bound() -> None:
    pacer = FlushPacer(BOUND)
    pacer.begin(1.0)
    for received in range(1, 6):
        assert not pacer.due(1.0 + received * BOUND / 10, received)
    assert pacer.due(1.0 + BOUND, 6)


@pytest.mark.parametrize(
    ("load", "window"),
    [
        (0.0, 0.0),
        (IDLE_LOAD, 0.0),
        ((IDLE_LOAD + BUSY_LOAD) / 2, BOUND / 2),
        (BUSY_LOAD, BOUND),
        (1.0, BOUND),
    ],
)
def test_the_wait_grows_with_the_gateways_load_up_to_the_bound(load: float, window: float) -> None:
    assert loaded(load).begin(200.0) == pytest.approx(window)


def test_a_gap_longer_than_a_few_samples_counts_as_idle() -> None:
    pacer = loaded(1.0)
    assert pacer.load == pytest.approx(1.0)
    pacer.observe(LAST_SAMPLE + 20 * LOAD_SAMPLE, 100.0)
    assert pacer.load == 0.0 and pacer.begin(200.0) == 0


def test_load_is_sampled_at_most_once_per_sample_period() -> None:
    pacer = loaded(1.0)
    pacer.observe(LAST_SAMPLE + LOAD_SAMPLE / 2, 1000.0)  # too soon after the last sample
    assert pacer.load == pytest.approx(1.0)


def test_a_flush_later_than_its_bound_means_overload_until_it_runs() -> None:
    pacer = FlushPacer(BOUND)
    assert not pacer.overloaded(5.0)  # nothing pending
    pacer.begin(5.0)
    assert not pacer.overloaded(5.0 + BOUND + OVERDUE / 2)
    assert pacer.overloaded(5.0 + BOUND + 2 * OVERDUE)
    assert pacer.due(5.0 + BOUND + 2 * OVERDUE, 1)
    assert not pacer.overloaded(5.0 + BOUND + 2 * OVERDUE)


# ---- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 3, 400, 4000])
def test_a_json_frame_is_the_framed_feed_frame(count: int) -> None:
    """Short (7-bit), medium (16-bit) and long (64-bit) lengths alike."""
    items = [FeedItem.of(b'"K%d"' % n, b"[%d]" % n, b'{"seq":%d}' % n) for n in range(count)]
    for initial, head in ((False, LIVE_FEED), (True, INITIAL_FEED)):
        frame = JSON.frame(initial, items, JSON.stamp(1_740_727_891_235))
        assert frame == text_frame(feed_frame(head, items, b"1740727891235"))


def test_an_upstox_frame_is_the_binary_frame_of_its_entries() -> None:
    entries = [entry_bytes(f"NSE_EQ|K{i}", b"\x0a\x02\x08\x01") for i in range(3)]
    items = [FeedItem(entry, b"") for entry in entries]
    stamp = UPSTOX.stamp(1_740_727_891_235)
    assert UPSTOX.frame(False, items, stamp)[2:] == live_frame(entries, 1_740_727_891_235)
    assert UPSTOX.frame(True, items, stamp)[2:] == initial_frame(entries, 1_740_727_891_235)


class KeepSink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def backlog(self) -> int:
        return 0


def test_a_lone_update_is_framed_once_for_all_its_subscribers() -> None:
    fan = FanOut(lambda: 1_740_727_891_235)
    sinks = [KeepSink() for _ in range(4)]
    keys = ([NIFTY], [NIFTY], [NIFTY, BANK], [BANK])
    for sink, held in zip(sinks, keys, strict=True):
        sub = Subscriber(sink)
        joined = [fan.join(sub, Mode.LTPC, key).channel for key in held]
        fan.complete(sub, [(channel, None) for channel in joined])
    before = fan.stats.frames  # the initial_feed frames
    for key in (NIFTY, BANK):
        fan.publish(*tick_of(key, 1))
    assert fan.flush() == 4
    alone, also, both, other = (sink.frames[-1] for sink in sinks)
    assert alone is also  # one frame built for both
    assert alone == JSON.frame(
        False, [JSON.item(key_json(NIFTY), tick_of(NIFTY, 1)[1])], b"1740727891235"
    )
    assert set(json.loads(both[both.index(b"{") :])["feeds"]) == {NIFTY, BANK}
    assert set(json.loads(other[other.index(b"{") :])["feeds"]) == {BANK}
    assert fan.stats.frames == before + 4 and fan.stats.delivered == 5


# ---- a real gateway ---------------------------------------------------------------------------


def tick_of(key: str, seq: int) -> tuple[bytes, bytes]:
    value = b'{"ltpc":{"ltp":%d.5,"ltt":"1","ltq":"1","cp":1.0}}' % seq
    return rc.tick_channel(Mode.LTPC, key).encode(), rc.encode_tick(value, seq, "e1", 1)


async def passes(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def live_frames(watcher: Client, count: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        frame = await watcher.recv()
        if frame.get("type") == "live_feed":
            frames.append(frame)
    return frames


@contextlib.asynccontextmanager
async def watching(start_gateway: StartGateway, *keys: str) -> AsyncIterator[tuple[Hub, Client]]:
    """A replica whose bound is a whole second, and a client subscribed to `keys` on it."""
    gateway = await start_gateway(gateway_flush_interval_ms=1000.0)
    async with client(gateway.ws_url) as watcher:
        await watcher.subscribe(list(keys))
        yield gateway.hub, watcher


async def test_an_update_to_an_idle_gateway_goes_out_within_passes_not_the_bound(
    start_gateway: StartGateway,
) -> None:
    async with watching(start_gateway, NIFTY) as (hub, watcher):
        frames = hub.fanout.stats.frames
        hub.on_message(*tick_of(NIFTY, 1))
        await passes(3)
        assert hub.fanout.stats.frames == frames + 1
        (frame,) = await live_frames(watcher, 1)
        assert frame["meta"][NIFTY]["seq"] == 1


async def test_one_read_and_the_reads_right_behind_it_share_one_frame(
    start_gateway: StartGateway,
) -> None:
    async with watching(start_gateway, NIFTY, BANK, RELIANCE) as (hub, watcher):
        frames = hub.fanout.stats.frames
        hub.on_message(*tick_of(NIFTY, 1))  # one read: two ticks
        hub.on_message(*tick_of(BANK, 1))
        asyncio.get_running_loop().call_soon(hub.on_message, *tick_of(RELIANCE, 1))  # the next
        await passes(5)
        assert hub.fanout.stats.frames == frames + 1
        (frame,) = await live_frames(watcher, 1)
        assert set(frame["meta"]) == {NIFTY, BANK, RELIANCE}


async def test_a_busy_gateway_lets_updates_wait_to_share_a_frame(
    start_gateway: StartGateway,
) -> None:
    async with watching(start_gateway, NIFTY, BANK) as (hub, watcher):
        now = asyncio.get_running_loop().time()
        hub.pacer.observe(now - LOAD_SAMPLE / 2, 0.0)  # not due for a new sample
        hub.pacer.load = 1.0  # as sampled from a busy process
        frames = hub.fanout.stats.frames
        hub.on_message(*tick_of(NIFTY, 1))
        await passes(5)
        assert hub.fanout.stats.frames == frames  # waiting for the window, not for a pass
        hub.on_message(*tick_of(BANK, 1))
        (frame,) = await live_frames(watcher, 1)
        assert set(frame["meta"]) == {NIFTY, BANK}
        await eventually(lambda: hub.fanout.stats.frames == frames + 1, "one frame")


async def test_a_client_whose_socket_still_holds_bytes_gets_its_updates_in_one_frame(
    start_gateway: StartGateway,
) -> None:
    """Its socket full (it stopped reading), two updates in two passes wait; once it reads
    again they arrive together, one frame behind what was queued."""
    gateway = await start_gateway(
        gateway_flush_interval_ms=1000.0,
        gateway_socket_send_buffer_bytes=4096,
        gateway_max_backlog_bytes=256 << 20,  # never behind: this is the step before
        gateway_max_backlog_seconds=60.0,
    )
    hub = gateway.hub
    async with client(gateway.ws_url, max_queue=1, max_size=None) as watcher:
        await watcher.subscribe([NIFTY, BANK, RELIANCE])
        (sub,) = hub.clients
        bulk = rc.tick_channel(Mode.LTPC, RELIANCE).encode()
        seq = 0

        async def fill() -> bool:
            nonlocal seq
            seq += 1
            value = b'{"ltpc":{"ltp":1.5,"ltt":"1","ltq":"1","cp":1.0},"pad":"%s"}' % (
                b"x" * 60_000
            )
            hub.on_message(bulk, rc.encode_tick(value, seq, "e1", 1))
            await passes(3)
            return sub.sink.backlog() > 1 << 20  # well past what the kernel takes

        await eventually(fill, "the client's socket to fill up")
        frames = hub.fanout.stats.frames
        hub.on_message(*tick_of(NIFTY, 1))
        await passes(3)
        hub.on_message(*tick_of(BANK, 1))
        await passes(3)
        assert hub.fanout.stats.frames == frames and hub.fanout.held == 1
        while True:
            frame = await watcher.recv()
            if frame.get("type") == "live_feed" and NIFTY in frame["meta"]:
                break
        assert {NIFTY, BANK} <= set(frame["meta"])  # with the last bulk tick, held as well
        assert hub.fanout.stats.frames == frames + 1
