"""The feed protocol core without sockets: requests, subscriptions and limits, frame bytes."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from google.protobuf.message import DecodeError

from services.simulator import frames
from services.simulator.accounts import DEMO_USERS, AuthCode, OneTimeCodes, TokenStore
from services.simulator.clock import MarketClock, ist_ms
from services.simulator.market import DETAIL_FULL, MarketModel
from services.simulator.ratelimit import RateLimiter
from services.simulator.universe import lookup
from shared.feed_protocol import (
    KeyLimits,
    RequestError,
    Subscriptions,
    parse_request,
)
from shared.instruments import Mode
from shared.proto import pb


def request(method: str, keys: list[str], mode: str | None = None) -> bytes:
    data: dict[str, object] = {"instrumentKeys": keys}
    if mode is not None:
        data["mode"] = mode
    return orjson.dumps({"guid": "x", "method": method, "data": data})


def test_sub_without_mode_means_ltpc_and_unsub_ignores_mode() -> None:
    assert parse_request(request("sub", ["NSE_EQ|A"])).mode is Mode.LTPC
    assert parse_request(request("sub", ["NSE_EQ|A"], "full_d30")).mode is Mode.FULL_D30
    assert parse_request(request("unsub", ["NSE_EQ|A"], "full")).mode is None
    text = request("change_mode", ["NSE_INDEX|Nifty 50"], "option_greeks").decode()
    assert parse_request(text).keys == ("NSE_INDEX|Nifty 50",)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"method": "sub"}',
        request("subscribe", ["NSE_EQ|A"]),
        request("sub", []),
        request("sub", ["NSE_EQ|A"], "depth"),
        request("change_mode", ["NSE_EQ|A"]),
        request("sub", ["nonsense", "NSE_XX|A"]),
    ],
)
def test_malformed_requests_raise_request_error(raw: bytes) -> None:
    with pytest.raises(RequestError):
        parse_request(raw)


def test_bad_keys_are_dropped_from_an_otherwise_good_request() -> None:
    parsed = parse_request(request("sub", ["NSE_EQ|A", "bad key", "NSE_EQ|A"]))
    assert parsed.keys == ("NSE_EQ|A",)
    assert parsed.rejected_keys == ("bad key",)


SMALL = KeyLimits(
    single={Mode.LTPC: 3, Mode.OPTION_GREEKS: 3, Mode.FULL: 2, Mode.FULL_D30: 1},
    combined={Mode.LTPC: 2, Mode.OPTION_GREEKS: 2, Mode.FULL: 1, Mode.FULL_D30: 1},
)


def test_keys_past_the_single_mode_limit_get_no_data() -> None:
    subs = Subscriptions(SMALL)
    fresh = subs.apply(parse_request(request("sub", [f"NSE_EQ|K{i}" for i in range(5)])))
    assert fresh == ["NSE_EQ|K0", "NSE_EQ|K1", "NSE_EQ|K2"]
    assert list(subs.refused()) == ["NSE_EQ|K3", "NSE_EQ|K4"]
    subs.apply(parse_request(request("unsub", ["NSE_EQ|K0"])))
    assert list(subs.active) == ["NSE_EQ|K1", "NSE_EQ|K2", "NSE_EQ|K3"]


def test_combined_limits_apply_once_a_second_mode_is_used() -> None:
    subs = Subscriptions(SMALL)
    subs.apply(parse_request(request("sub", ["NSE_EQ|A", "NSE_EQ|B", "NSE_EQ|C"])))
    assert len(subs.active) == 3
    subs.apply(parse_request(request("sub", ["NSE_EQ|F1", "NSE_EQ|F2"], "full")))
    assert subs.active == {"NSE_EQ|A": Mode.LTPC, "NSE_EQ|B": Mode.LTPC, "NSE_EQ|F1": Mode.FULL}


def test_change_mode_moves_only_subscribed_keys() -> None:
    subs = Subscriptions(SMALL)
    subs.apply(parse_request(request("sub", ["NSE_EQ|A"])))
    assert subs.apply(parse_request(request("change_mode", ["NSE_EQ|A", "NSE_EQ|Z"], "full"))) == []
    assert subs.modes == {"NSE_EQ|A": Mode.FULL}


def test_rate_limiter_windows() -> None:
    limiter = RateLimiter(per_second=2, per_minute=3, per_30_minutes=100)
    assert limiter.allow("u", 0) and limiter.allow("u", 10)
    assert not limiter.allow("u", 20)  # third in the same second
    assert limiter.allow("u", 1_001)  # a new second, third in the minute
    assert not limiter.allow("u", 2_500)  # fourth in the minute
    assert limiter.allow("other", 2_500)
    assert limiter.allow("u", 60_001)


def test_codes_are_single_use_and_tokens_expire() -> None:
    tokens = TokenStore(demo_token="demo")
    access, extended = tokens.issue(DEMO_USERS[1], 1_000)
    assert not access.startswith("eyJ") and len(access) >= 32
    record = tokens.resolve(access, 2_000)
    assert record is not None and record.user == DEMO_USERS[1] and not record.extended
    assert tokens.resolve(extended, 2_000) is not None
    assert tokens.resolve("demo", 2_000) is not None
    assert tokens.expire_all(3_000, include_demo=False) == 2
    assert tokens.resolve(access, 3_000) is None and tokens.resolve("demo", 3_000) is not None
    codes: OneTimeCodes[AuthCode] = OneTimeCodes()
    code = codes.issue(AuthCode(DEMO_USERS[0], "client", "http://x/cb", expires_ms=5_000))
    assert codes.take(code, 4_000) is not None
    assert codes.take(code, 4_000) is None  # spent
    late = codes.issue(AuthCode(DEMO_USERS[0], "client", "http://x/cb", expires_ms=5_000))
    assert codes.take(late, 5_000) is None  # expired


def decode(raw: bytes) -> pb.FeedResponse:
    message = pb.FeedResponse()
    message.ParseFromString(raw)
    return message


def test_frames_concatenate_into_one_feed_response() -> None:
    day = dt.date(2026, 11, 18)
    market = MarketModel(1, MarketClock("open"), anchor_day=day)
    now = ist_ms(day, 11)
    reliance = lookup("NSE_EQ|INE002A01018", day)
    nifty = lookup("NSE_INDEX|Nifty 50", day)
    assert reliance is not None and nifty is not None
    deep = market.snapshot(reliance, now, DETAIL_FULL, 30)
    entries = [
        frames.feed_entry(reliance.instrument_key, frames.build_feed(deep, Mode.FULL_D30, False)),
        frames.feed_entry(
            nifty.instrument_key,
            frames.build_feed(market.snapshot(nifty, now, DETAIL_FULL), Mode.FULL, True),
        ),
    ]
    live = decode(frames.live_frame(entries, now))
    assert live.type == pb.live_feed and live.currentTs == now
    equity = live.feeds[reliance.instrument_key]
    assert equity.requestMode == pb.full_d30
    assert len(equity.fullFeed.marketFF.marketLevel.bidAskQuote) == 30
    index = live.feeds[nifty.instrument_key]
    assert index.fullFeed.WhichOneof("FullFeedUnion") == "indexFF"
    assert index.requestMode == pb.full_d5
    initial = decode(frames.initial_frame(entries[:1], now))
    assert initial.type == pb.initial_feed and list(initial.feeds) == [reliance.instrument_key]
    info = decode(frames.market_info_frame({"NSE_EQ": "NORMAL_CLOSE"}, now))
    assert info.type == pb.market_info
    assert info.marketInfo.segmentStatus["NSE_EQ"] == pb.NORMAL_CLOSE
    with pytest.raises(DecodeError):
        decode(frames.malformed_frame())
