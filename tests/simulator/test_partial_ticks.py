"""Partial ticks: live entries leave out what did not change since the instrument's previous tick.

The hub runs on a hand-moved clock (no sockets) so that which ticks share a book is known: the
model quotes each instrument's book once a second, so ticks 100 ms apart see the same book most
of the time and a new one about once a second. One test reads the real feed over a socket.
"""

from __future__ import annotations

import orjson
import websockets

from services.simulator import frames
from services.simulator.accounts import DEMO_USERS, TokenStore
from services.simulator.clock import ist_ms
from services.simulator.feed import FeedConnection, FeedHub
from services.simulator.market import DETAIL_FULL
from services.simulator.universe import lookup
from shared.instruments import Mode
from shared.proto import pb
from tests.simulator.helpers import (
    at_the_money_call,
    authorized_url,
    frame_of_type,
    live_with,
    send,
)
from tests.simulator.test_hub import DAY, Clock, data_frames, hub_at
from tests.support.simulator import SimulatorHandle

RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
OPTION = at_the_money_call(DAY).instrument_key
STEP_MS = 100


def subscribe(
    hub: FeedHub, conn: FeedConnection, mode: str, *keys: str, method: str = "sub"
) -> None:
    data = {"mode": mode, "instrumentKeys": list(keys)}
    hub.handle_request(conn, orjson.dumps({"guid": "g", "method": method, "data": data}))


def market_of(feed: pb.Feed) -> pb.MarketFullFeed:
    return feed.fullFeed.marketFF


def book_at(hub: FeedHub, key: str, ms: int) -> list[tuple[float, int]]:
    instrument = hub.model.instrument(key)
    assert instrument is not None
    return hub.model.snapshot(instrument, ms, DETAIL_FULL).bids


def started(hub: FeedHub, mode: str, *keys: str) -> tuple[FeedConnection, Clock]:
    """A connection subscribed to `keys` in `mode`, its snapshot and first live tick read."""
    clock = hub._real_now
    assert isinstance(clock, Clock)
    conn = hub.register(DEMO_USERS[0], "t")
    subscribe(hub, conn, mode, *keys)
    hub._send_snapshots(clock.ms)
    hub._tick(clock.ms)
    initial, live = data_frames(conn)
    assert initial.type == pb.initial_feed and live.type == pb.live_feed
    return conn, clock


async def test_a_live_tick_leaves_out_an_unchanged_book_and_sends_a_new_one() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    conn, clock = started(hub, "full", RELIANCE)
    kept = sent = 0
    for _ in range(30):  # three seconds: about three new books
        before = book_at(hub, RELIANCE, clock.ms)
        clock.ms += STEP_MS
        hub._tick(clock.ms)
        (live,) = data_frames(conn)
        market = market_of(live.feeds[RELIANCE])
        assert market.HasField("ltpc") and market.ltpc.ltt == clock.ms  # the tick itself
        assert market.vtt > 0 and market.tbq > 0  # scalars are never left out
        if book_at(hub, RELIANCE, clock.ms) == before:
            assert not market.HasField("marketLevel")
            kept += 1
        else:
            assert len(market.marketLevel.bidAskQuote) == 5
            sent += 1
    assert kept > sent > 0
    assert hub.stats()["partial_feeds"] == kept


async def test_option_greeks_mode_leaves_out_the_unchanged_first_level() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    conn, clock = started(hub, "option_greeks", OPTION)
    seen: set[bool] = set()
    for _ in range(30):
        before = book_at(hub, OPTION, clock.ms)[0]
        clock.ms += STEP_MS
        hub._tick(clock.ms)
        (live,) = data_frames(conn)
        first = live.feeds[OPTION].firstLevelWithGreeks
        assert first.HasField("ltpc") and first.oi > 0
        unchanged = book_at(hub, OPTION, clock.ms)[0] == before
        assert first.HasField("firstDepth") is not unchanged
        seen.add(unchanged)
    assert seen == {True, False}


async def test_the_snapshot_is_whole_and_a_newcomer_makes_the_next_tick_whole() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    old, clock = started(hub, "full", RELIANCE)
    while True:  # a moment whose book is the previous tick's: a partial tick is due
        before = book_at(hub, RELIANCE, clock.ms)
        clock.ms += STEP_MS
        if book_at(hub, RELIANCE, clock.ms) == before:
            break
        hub._tick(clock.ms)
        data_frames(old)
    new = hub.register(DEMO_USERS[0], "t")
    subscribe(hub, new, "full", RELIANCE)
    hub._send_snapshots(clock.ms)
    hub._tick(clock.ms)
    (old_live,) = data_frames(old)
    initial, new_live = data_frames(new)
    assert len(market_of(initial.feeds[RELIANCE]).marketLevel.bidAskQuote) == 5
    # The newcomer never got the previous tick, so this one is whole for both (shared frames).
    for live in (old_live, new_live):
        assert len(market_of(live.feeds[RELIANCE]).marketLevel.bidAskQuote) == 5


async def test_a_connection_that_missed_a_tick_gets_the_next_one_whole() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    conn, clock = started(hub, "full", RELIANCE)
    book = book_at(hub, RELIANCE, clock.ms)
    conn.max_queued = 0  # its reader stalls: the next live frame is skipped
    hub._tick(clock.ms + 1)
    assert conn.frames_skipped == 1
    conn.max_queued = 64
    hub._tick(clock.ms + 2)
    (live,) = data_frames(conn)
    assert book_at(hub, RELIANCE, clock.ms + 2) == book  # unchanged, and sent all the same
    assert len(market_of(live.feeds[RELIANCE]).marketLevel.bidAskQuote) == 5

    clock.ms += 2
    hub.stall(1)  # silenced, then back: the first tick after the silence is whole again
    hub._tick(clock.ms + 1)
    assert data_frames(conn) == []
    clock.ms += 1000
    book = book_at(hub, RELIANCE, clock.ms)
    hub._tick(clock.ms)
    hub._tick(clock.ms + 1)
    first, second = data_frames(conn)
    assert market_of(first.feeds[RELIANCE]).HasField("marketLevel")
    assert book_at(hub, RELIANCE, clock.ms + 1) == book
    assert not market_of(second.feeds[RELIANCE]).HasField("marketLevel")


async def test_a_mode_change_makes_the_next_tick_whole_in_the_new_mode() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    full, clock = started(hub, "full", OPTION)
    book = book_at(hub, OPTION, clock.ms)
    greeks = hub.register(DEMO_USERS[0], "t")
    subscribe(hub, greeks, "option_greeks", OPTION)
    hub._send_snapshots(clock.ms + 1)
    hub._tick(clock.ms + 1)
    for conn in (full, greeks):
        data_frames(conn)  # read what came before the change
    subscribe(hub, greeks, "full", OPTION, method="change_mode")  # no snapshot for this
    hub._tick(clock.ms + 2)
    assert book_at(hub, OPTION, clock.ms + 2) == book  # unchanged, but never shown to `greeks`
    for conn in (full, greeks):
        (live,) = data_frames(conn)
        assert len(market_of(live.feeds[OPTION]).marketLevel.bidAskQuote) == 5


async def test_with_partial_ticks_off_every_tick_is_whole() -> None:
    hub = hub_at(Clock(ist_ms(DAY, 11, 0)), TokenStore("t"), kind="open")
    hub.partial_ticks = False
    conn, clock = started(hub, "full", RELIANCE, NIFTY)
    for _ in range(20):
        clock.ms += STEP_MS
        hub._tick(clock.ms)
        (live,) = data_frames(conn)
        assert len(market_of(live.feeds[RELIANCE]).marketLevel.bidAskQuote) == 5
        assert len(market_of(live.feeds[RELIANCE]).marketOHLC.ohlc) == 2
        assert len(live.feeds[NIFTY].fullFeed.indexFF.marketOHLC.ohlc) == 2
    assert hub.stats()["partial_feeds"] == 0


def test_unchanged_parts_per_mode_and_what_build_feed_leaves_out() -> None:
    option = lookup(OPTION, DAY)
    assert option is not None
    hub = hub_at(Clock(0), TokenStore("t"), kind="open")
    snap = hub.model.snapshot(option, ist_ms(DAY, 11, 0), DETAIL_FULL)
    everything = frames.SAME_DEPTH | frames.SAME_GREEKS | frames.SAME_OHLC
    assert frames.unchanged_parts(snap, snap, Mode.FULL) == everything
    assert frames.unchanged_parts(snap, snap, Mode.OPTION_GREEKS) == everything
    assert frames.unchanged_parts(snap, snap, Mode.LTPC) == 0
    assert frames.unchanged_parts(snap, None, Mode.FULL) == 0
    market = market_of(frames.build_feed(snap, Mode.FULL, False, everything))
    assert market.HasField("ltpc") and market.vtt > 0 and market.oi > 0 and market.iv > 0
    for part in ("marketLevel", "optionGreeks", "marketOHLC"):
        assert not market.HasField(part)
    whole = market_of(frames.build_feed(snap, Mode.FULL, False))
    for part in ("marketLevel", "optionGreeks", "marketOHLC"):
        assert whole.HasField(part)


async def test_the_real_feed_sends_partial_ticks_by_default(simulator: SimulatorHandle) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await send(ws, "sub", [RELIANCE], "full")
        initial = await frame_of_type(ws, pb.initial_feed)
        assert market_of(initial.feeds[RELIANCE]).HasField("marketLevel")
        while market_of((await live_with(ws, RELIANCE)).feeds[RELIANCE]).HasField("marketLevel"):
            pass  # a 20 ms tick sees the same book for about a second
    assert (await simulator.stats())["partial_feeds"] > 0
