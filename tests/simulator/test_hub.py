"""The feed hub's behaviour over time, driven by a hand-moved clock (no sockets)."""

from __future__ import annotations

import datetime as dt

import orjson

from services.simulator.accounts import DEMO_USERS, TokenStore
from services.simulator.clock import MarketClock, ist_ms
from services.simulator.feed import CloseRequest, FeedConnection, FeedHub
from services.simulator.market import MarketModel
from services.simulator.universe import universe
from shared.feed_protocol import UPSTOX_LIMITS
from shared.proto import pb

DAY = dt.date(2026, 11, 18)  # a Wednesday
GOLD = next(i.instrument_key for i in universe(DAY) if i.segment == "MCX_FO")  # trades at night


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def hub_at(clock: Clock, tokens: TokenStore, kind: str = "ist") -> FeedHub:
    market = MarketModel(3, MarketClock(kind), anchor_day=DAY)  # type: ignore[arg-type]
    return FeedHub(market, tokens, UPSTOX_LIMITS, 100.0, 2, 64, clock=clock)


def frames_of(conn: FeedConnection) -> list[pb.FeedResponse]:
    found = []
    while conn.outbox:
        item = conn.outbox.popleft()
        assert isinstance(item, bytes)
        frame = pb.FeedResponse()
        frame.ParseFromString(item)
        found.append(frame)
    return found


def subscribe(hub: FeedHub, conn: FeedConnection, *keys: str) -> None:
    request = {"guid": "g", "method": "sub", "data": {"instrumentKeys": list(keys)}}
    hub.handle_request(conn, orjson.dumps(request))


async def test_market_info_follows_the_ist_clock_and_closed_markets_are_silent() -> None:
    clock = Clock(ist_ms(DAY, 15, 29))
    tokens = TokenStore("t")
    hub = hub_at(clock, tokens)
    conn = hub.register(DEMO_USERS[0], "t")
    (info,) = frames_of(conn)
    assert info.marketInfo.segmentStatus["NSE_EQ"] == pb.NORMAL_OPEN
    subscribe(hub, conn, "NSE_EQ|INE002A01018", GOLD)
    hub._send_snapshots(clock.ms)
    hub._tick(clock.ms)
    snapshot, live = frames_of(conn)
    assert snapshot.type == pb.initial_feed and len(snapshot.feeds) == 2
    assert live.type == pb.live_feed and len(live.feeds) == 2

    clock.ms = ist_ms(DAY, 15, 31)  # NSE closes, MCX trades on
    hub._housekeeping(clock.ms)
    hub._tick(clock.ms)
    info, live = frames_of(conn)
    assert info.type == pb.market_info
    assert info.marketInfo.segmentStatus["NSE_EQ"] == pb.CLOSING_START
    assert info.marketInfo.segmentStatus["MCX_FO"] == pb.NORMAL_OPEN
    assert list(live.feeds) == [GOLD]

    clock.ms = ist_ms(DAY, 23, 59)  # everything shut: a silent feed, snapshots still answer
    hub._housekeeping(clock.ms)
    hub._tick(clock.ms)
    (info,) = frames_of(conn)
    assert set(info.marketInfo.segmentStatus.values()) == {pb.NORMAL_CLOSE}
    subscribe(hub, conn, "NSE_EQ|INE009A01021")
    hub._send_snapshots(clock.ms)
    (snapshot,) = frames_of(conn)
    ltt = snapshot.feeds["NSE_EQ|INE009A01021"].ltpc.ltt
    assert ltt == ist_ms(DAY, 15, 30) - 1  # the last trade of the session


async def test_feeds_close_when_their_token_expires_at_0330() -> None:
    clock = Clock(ist_ms(DAY, 20, 0))
    tokens = TokenStore()
    access, _ = tokens.issue(DEMO_USERS[0], clock.ms)
    hub = hub_at(clock, tokens, kind="open")
    conn = hub.register(DEMO_USERS[0], access)
    hub._housekeeping(clock.ms)
    assert not conn.closing
    clock.ms = ist_ms(DAY + dt.timedelta(days=1), 3, 30)
    hub._housekeeping(clock.ms)
    assert conn.closing
    assert conn.outbox[-1] == CloseRequest(1008, "token expired")


async def test_slow_readers_skip_live_frames_but_keep_control_frames() -> None:
    clock = Clock(ist_ms(DAY, 11, 0))
    hub = hub_at(clock, TokenStore("t"), kind="open")
    hub.max_queued_frames = 3
    conn = hub.register(DEMO_USERS[0], "t")
    conn.max_queued = 3
    subscribe(hub, conn, "NSE_INDEX|Nifty 50")
    hub._send_snapshots(clock.ms)
    for step in range(5):
        hub._tick(clock.ms + step)
    assert conn.frames_skipped == 4  # market_info + snapshot + one live frame fit
    hub.send_malformed()  # control frames are never skipped
    assert len(conn.outbox) == 4


def data_frames(conn: FeedConnection) -> list[pb.FeedResponse]:
    return [frame for frame in frames_of(conn) if frame.type != pb.market_info]


async def test_a_stall_silences_the_connections_open_then_and_a_fresh_one_gets_data() -> None:
    clock = Clock(ist_ms(DAY, 11, 0))
    hub = hub_at(clock, TokenStore("t"), kind="open")
    old = hub.register(DEMO_USERS[0], "t")
    subscribe(hub, old, "NSE_INDEX|Nifty 50")
    assert hub.stall(60) == 1
    subscribe(hub, old, "NSE_INDEX|Nifty Bank")  # taken in, answered after the stall
    fresh = hub.register(DEMO_USERS[0], "t")
    subscribe(hub, fresh, "NSE_INDEX|Nifty 50")
    hub._send_snapshots(clock.ms)
    hub._tick(clock.ms)
    assert data_frames(old) == []
    assert [frame.type for frame in data_frames(fresh)] == [pb.initial_feed, pb.live_feed]

    clock.ms += 60_000  # the stall is over: the snapshots held back, then live data
    hub._send_snapshots(clock.ms)
    hub._tick(clock.ms)
    snapshot, live = data_frames(old)
    assert snapshot.type == pb.initial_feed
    assert set(snapshot.feeds) == {"NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"}
    assert live.type == pb.live_feed


async def test_a_stall_of_everything_silences_new_connections_too_and_0_ends_it() -> None:
    clock = Clock(ist_ms(DAY, 11, 0))
    hub = hub_at(clock, TokenStore("t"), kind="open")
    hub.stall(60, everything=True)
    conn = hub.register(DEMO_USERS[0], "t")
    (info,) = frames_of(conn)  # the market status still goes out
    assert info.type == pb.market_info
    subscribe(hub, conn, "NSE_INDEX|Nifty 50")
    assert hub.stats()["stalled"] is True
    hub.stall(0)
    assert hub.stats()["stalled"] is False
    hub._send_snapshots(clock.ms)
    assert [frame.type for frame in data_frames(conn)] == [pb.initial_feed]


async def test_the_market_clock_may_run_at_an_offset_while_tokens_keep_real_time() -> None:
    clock = Clock(ist_ms(DAY, 11, 0))  # real time: Wednesday, NSE open
    tokens = TokenStore()
    access, _ = tokens.issue(DEMO_USERS[0], clock.ms)
    market = MarketModel(3, MarketClock("ist"), anchor_day=DAY)
    sunday = ist_ms(DAY + dt.timedelta(days=4), 11, 0)
    hub = FeedHub(market, tokens, UPSTOX_LIMITS, 100.0, 2, 64, clock, sunday - clock.ms)
    conn = hub.register(DEMO_USERS[0], access)
    (info,) = frames_of(conn)
    assert set(info.marketInfo.segmentStatus.values()) == {pb.NORMAL_CLOSE}
    assert info.currentTs == sunday
    hub._housekeeping(hub.market_now())
    assert not conn.closing  # the token is checked in real time: still valid
