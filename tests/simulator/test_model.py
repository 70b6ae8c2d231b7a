"""The pure parts: time, tokens' lifetime, the universe, the price model and its candles."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from services.simulator.clock import MarketClock, ist_ms, token_expiry_ms
from services.simulator.greeks import black_scholes
from services.simulator.market import DETAIL_FULL, MarketModel
from services.simulator.noise import MultiScaleNoise
from services.simulator.universe import lookup, universe
from shared.instruments import KEY_SEGMENTS, SEGMENTS, is_instrument_key
from shared.ist import IST
from tests.simulator.helpers import at_the_money_call

DAY = dt.date(2026, 11, 18)  # a Wednesday, not a holiday
ANCHOR = dt.date(2026, 11, 20)


def ms_at(day: dt.date, hour: int, minute: int = 0) -> int:
    return ist_ms(day, hour, minute)


@pytest.mark.parametrize(
    ("issued", "expires"),
    [
        (dt.datetime(2026, 3, 3, 20, 0, tzinfo=IST), dt.datetime(2026, 3, 4, 3, 30, tzinfo=IST)),
        (dt.datetime(2026, 3, 4, 2, 30, tzinfo=IST), dt.datetime(2026, 3, 4, 3, 30, tzinfo=IST)),
        (dt.datetime(2026, 3, 4, 3, 30, tzinfo=IST), dt.datetime(2026, 3, 5, 3, 30, tzinfo=IST)),
        (dt.datetime(2026, 3, 4, 9, 15, tzinfo=IST), dt.datetime(2026, 3, 5, 3, 30, tzinfo=IST)),
    ],
)
def test_tokens_expire_at_the_next_0330_ist(issued: dt.datetime, expires: dt.datetime) -> None:
    assert token_expiry_ms(int(issued.timestamp() * 1000)) == int(expires.timestamp() * 1000)


def test_ist_clock_follows_exchange_hours() -> None:
    clock = MarketClock("ist")
    assert clock.status("NSE_EQ", ms_at(DAY, 9, 3)) == "PRE_OPEN_START"
    assert clock.status("NSE_EQ", ms_at(DAY, 9, 10)) == "PRE_OPEN_END"
    assert clock.status("NSE_EQ", ms_at(DAY, 10, 0)) == "NORMAL_OPEN"
    assert clock.status("NSE_EQ", ms_at(DAY, 15, 35)) == "CLOSING_START"
    assert clock.status("NSE_EQ", ms_at(DAY, 20, 0)) == "NORMAL_CLOSE"
    assert clock.status("MCX_FO", ms_at(DAY, 20, 0)) == "NORMAL_OPEN"
    saturday = dt.date(2026, 11, 21)
    assert clock.status("NSE_EQ", ms_at(saturday, 10, 0)) == "NORMAL_CLOSE"
    holiday = dt.date(2026, 12, 25)
    assert not clock.is_trading_day(holiday)
    assert set(clock.statuses(ms_at(DAY, 10))) == set(SEGMENTS)
    assert set(MarketClock("open").statuses(ms_at(saturday, 3)).values()) == {"NORMAL_OPEN"}


def test_universe_holds_indices_equities_and_derivatives() -> None:
    instruments = universe(ANCHOR)
    keys = {instrument.instrument_key for instrument in instruments}
    assert len(keys) == len(instruments)
    assert {"NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank", "NSE_INDEX|India VIX"} <= keys
    reliance = lookup("NSE_EQ|INE002A01018", ANCHOR)
    assert reliance is not None and reliance.trading_symbol == "RELIANCE"
    assert sum(1 for i in instruments if i.instrument_type == "EQ") >= 30
    options = [i for i in instruments if i.is_option]
    futures = [i for i in instruments if i.instrument_type == "FUT"]
    assert options and futures
    for option in options:
        assert option.segment == "NSE_FO"
        assert option.expiry is not None and option.expiry >= ANCHOR
        assert option.strike_price and option.lot_size > 0
        assert option.exchange_token == option.instrument_key.split("|")[1]
        assert lookup(option.underlying_key or "", ANCHOR) is not None
    for instrument in instruments:
        assert is_instrument_key(instrument.instrument_key)
        assert instrument.to_dict()["instrument_key"] == instrument.instrument_key


def test_only_listed_instruments_exist() -> None:
    for key in ("NSE_EQ|INE999Z01011", "NSE_FO|99999", "BSE_INDEX|Made Up", "NSE_FO|NOSUCH"):
        assert lookup(key, ANCHOR) is None and lookup(key) is None
    assert lookup("NOT_A_SEGMENT|X", ANCHOR) is None
    assert lookup("NSE_EQ|", ANCHOR) is None
    bse = lookup("BSE_EQ|INE002A01018", ANCHOR)
    assert bse is not None and bse.exchange == "BSE" and bse.trading_symbol == "RELIANCE"


def test_the_universe_is_big_enough_for_the_benchmarks_and_the_same_every_run() -> None:
    instruments = universe(ANCHOR)
    options = [i for i in instruments if i.is_option]
    assert len(options) >= 1500  # bench.ingest's default: 1500 keys in full mode
    assert [i.to_dict() for i in instruments] == [i.to_dict() for i in universe(ANCHOR)]
    futures = {i.name for i in instruments if i.instrument_type == "FUT"}
    assert {"NIFTY", "BANKNIFTY", "FINNIFTY", "RELIANCE", "TCS"} <= futures
    assert all(i.strike_price and i.strike_price > 0 for i in options)


def test_contracts_listed_since_the_anchor_day_are_known_too() -> None:
    """A simulator started weeks ago knows the contracts the gateway's catalogue lists today."""
    today = universe()
    month_ago = dt.date.today() - dt.timedelta(days=35)
    newer = [
        i for i in today if i.instrument_key not in {j.instrument_key for j in universe(month_ago)}
    ]
    assert newer and all(lookup(i.instrument_key, month_ago) == i for i in newer)


def test_noise_is_deterministic_and_linear_between_grid_points() -> None:
    spans = (15_000, 60_000, 300_000)
    first = MultiScaleNoise(7, spans, (1.0, 1.0, 1.0))
    second = MultiScaleNoise(7, spans, (1.0, 1.0, 1.0))
    other = MultiScaleNoise(8, spans, (1.0, 1.0, 1.0))
    times = [1_000_000 + 3_333 * i for i in range(50)]
    # a pure function of time: the order of evaluation does not matter
    assert [first.value(t) for t in times] == [second.value(t) for t in reversed(times)][::-1]
    assert [first.value(t) for t in times] == pytest.approx([second.sample(t) for t in times])
    assert [first.value(t) for t in times] != [other.value(t) for t in times]
    # halfway between grid points is the mean of the ends
    start = 15_000 * 100
    middle = first.sample(start + 7_500)
    assert middle == pytest.approx((first.sample(start) + first.sample(start + 15_000)) / 2)


def model(seed: int = 42, clock: str = "open") -> MarketModel:
    return MarketModel(seed, MarketClock(clock), anchor_day=ANCHOR)  # type: ignore[arg-type]


def test_same_seed_same_market_different_seed_different_market() -> None:
    reliance = lookup("NSE_EQ|INE002A01018", ANCHOR)
    assert reliance is not None
    times = [ms_at(DAY, 10) + 777 * i for i in range(40)]
    a, b, c = model(42), model(42), model(43)
    assert [a.ltp(reliance, t) for t in times] == [b.ltp(reliance, t) for t in times]
    assert [a.ltp(reliance, t) for t in times] != [c.ltp(reliance, t) for t in times]
    snap_a = a.snapshot(reliance, times[-1], DETAIL_FULL, 30)
    snap_b = b.snapshot(reliance, times[-1], DETAIL_FULL, 30)
    assert (snap_a.ltp, snap_a.vtt, snap_a.bids, snap_a.asks) == (
        snap_b.ltp,
        snap_b.vtt,
        snap_b.bids,
        snap_b.asks,
    )


def test_prices_stay_near_the_base_price_today() -> None:
    nifty = lookup("NSE_INDEX|Nifty 50", ANCHOR)
    assert nifty is not None
    ltp = model().ltp(nifty, ms_at(ANCHOR, 12))
    assert 0.85 * nifty.base_price < ltp < 1.15 * nifty.base_price


@pytest.mark.parametrize("key", ["NSE_EQ|INE002A01018", "NSE_INDEX|Nifty Bank"])
def test_minute_candles_contain_every_tick_of_their_minute(key: str) -> None:
    instrument = lookup(key, ANCHOR)
    assert instrument is not None
    market = model(clock="ist")
    session = market.clock.session(instrument.segment, DAY)
    assert session is not None
    for minute in range(10):
        start = ms_at(DAY, 11) + minute * 60_000
        candle = market.candle(instrument, session, start, start + 60_000)
        ticks = [market.ltp(instrument, start + 250 * i) for i in range(240)]
        assert candle.low <= min(ticks) and max(ticks) <= candle.high
        assert candle.open == ticks[0]
        assert candle.low <= candle.close <= candle.high


def test_history_and_live_meet_at_the_previous_close() -> None:
    instrument = lookup("NSE_EQ|INE009A01021", ANCHOR)
    assert instrument is not None
    market = model(clock="ist")
    yesterday = market.day_candle(instrument, DAY - dt.timedelta(days=1))
    snapshot = market.snapshot(instrument, ms_at(DAY, 10), DETAIL_FULL)
    assert yesterday is not None
    assert snapshot.cp == yesterday.close
    assert snapshot.day is not None and snapshot.day.open == market.ltp(
        instrument, ms_at(DAY, 9, 15)
    )


def test_full_snapshot_is_believable() -> None:
    market = model()
    option = at_the_money_call(ANCHOR)
    now = ms_at(DAY, 11, 7)
    snap = market.snapshot(option, now, DETAIL_FULL, 30)
    assert snap.greeks is not None and 0.0 < snap.greeks.delta < 1.0
    assert snap.iv > 0 and snap.oi > 0 and snap.vtt > 0
    assert len(snap.bids) == len(snap.asks) == 30
    assert snap.bids[0][0] < snap.asks[0][0]
    assert [p for p, _ in snap.bids] == sorted((p for p, _ in snap.bids), reverse=True)
    assert [p for p, _ in snap.asks] == sorted(p for p, _ in snap.asks)
    assert snap.day is not None and snap.day.low <= snap.ltp <= snap.day.high
    assert snap.minute is not None and snap.minute.ts == (now // 60_000 - 1) * 60_000
    later = market.snapshot(option, now + 90_000, DETAIL_FULL, 5)
    assert later.vtt >= snap.vtt


def test_closed_market_shows_the_last_close_under_the_ist_clock() -> None:
    market = model(clock="ist")
    instrument = lookup("NSE_EQ|INE467B01029", ANCHOR)
    assert instrument is not None
    evening = market.snapshot(instrument, ms_at(DAY, 21), DETAIL_FULL)
    assert evening.ltt == ms_at(DAY, 15, 30) - 1
    night = market.snapshot(instrument, ms_at(DAY, 23, 59), DETAIL_FULL)
    assert night.ltp == evening.ltp and night.vtt == evening.vtt


def test_black_scholes_put_call_parity_and_greek_signs() -> None:
    call = black_scholes(100.0, 105.0, 0.25, 0.065, 0.2, call=True)
    put = black_scholes(100.0, 105.0, 0.25, 0.065, 0.2, call=False)
    import math

    assert call.price - put.price == pytest.approx(100.0 - 105.0 * math.exp(-0.065 * 0.25))
    assert 0 < call.delta < 1 and -1 < put.delta < 0
    assert call.gamma == pytest.approx(put.gamma) and call.gamma > 0
    assert call.theta < 0 and call.vega > 0 and call.rho > 0 > put.rho
    expired = black_scholes(100.0, 90.0, 0.0, 0.065, 0.2, call=True)
    assert expired.price == 10.0 and expired.delta == 1.0


@pytest.mark.parametrize("segment", KEY_SEGMENTS)
def test_the_model_simulates_an_instrument_of_every_segment(segment: str) -> None:
    # The universe lists no instrument in some segments (MCX, currencies): the model's hours
    # and prices for them are checked on an instrument made here, never a key clients can use.
    listed = lookup("NSE_EQ|INE002A01018", ANCHOR)
    assert listed is not None
    instrument = replace(listed, instrument_key=f"{segment}|12345", segment=segment)
    for clock in ("open", "ist"):
        snap = model(clock=clock).snapshot(instrument, ms_at(DAY, 12), DETAIL_FULL, 30)
        assert snap.ltp > 0 and snap.cp > 0
        assert snap.day is not None and snap.day.low <= snap.ltp <= snap.day.high
