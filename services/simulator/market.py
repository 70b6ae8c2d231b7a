"""The simulated market: prices, volumes, depth, greeks and candles as functions of time.

Pure and deterministic: everything is computed from (seed, instrument key, time) by the seeded
noise in `noise.py`, so history (candles) and the live feed evaluate one and the same price path
and a chart of both is continuous. Derivatives are priced from their underlying's path
(Black-Scholes for options, cost of carry for futures). The only state kept is caches and each
instrument's running day high/low, which also takes in every price the feed has shown, so the
`1d` candle always contains the ticks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from services.simulator.clock import IST_OFFSET_MS, MS_PER_DAY, MarketClock, ist_date, ist_ms
from services.simulator.greeks import Greeks, black_scholes
from services.simulator.noise import (
    GRID_MS,
    YEAR_MS,
    MultiScaleNoise,
    hash3,
    signed_unit,
    unit,
)
from services.simulator.universe import Instrument, lookup, stable_hash

RATE: Final = 0.065  # risk-free rate for option pricing and futures carry
JITTER: Final = 0.00015  # sub-grid trade-to-trade noise, relative to the price
JITTER_MS: Final = 250
VOLUME_BLOCK_MS: Final = 900_000
MINUTE_MS: Final = 60_000
DAY_SAMPLES: Final = 16  # path samples per historical day candle
DAY_RANGE_STEP_MS: Final = 60 * MINUTE_MS  # how finely a cold start samples today's range
_LCG_MULTIPLIER: Final = 6364136223846793005
_LCG_INCREMENT: Final = 1442695040888963407
_MASK64: Final = (1 << 64) - 1

# price path scales: 15 s ... 180 days; scales from 7 days up are "slow"
PRICE_SPANS: Final = (
    15_000,
    60_000,
    300_000,
    1_800_000,
    10_800_000,
    86_400_000,
    604_800_000,
    2_592_000_000,
    15_552_000_000,
)
SLOW_LEVEL: Final = 6
OI_SPANS: Final = (1_800_000, 10_800_000, 86_400_000, 604_800_000)
IV_SPANS: Final = (300_000, 1_800_000, 10_800_000, 86_400_000)


def round_to_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 2)


def _floor_tick(price: float, tick: float) -> float:
    return round(math.floor(price / tick + 1e-9) * tick, 2)


def _ceil_tick(price: float, tick: float) -> float:
    return round(math.ceil(price / tick - 1e-9) * tick, 2)


@dataclass(slots=True)
class Candle:
    ts: int  # start, ms since epoch
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: float


@dataclass(slots=True)
class Snapshot:
    """One instrument's market at one instant; `detail` says how much was filled in."""

    ltp: float
    ltt: int
    ltq: int
    cp: float
    detail: int = 0
    vtt: int = 0
    oi: float = 0.0
    iv: float = 0.0
    greeks: Greeks | None = None
    bids: list[tuple[float, int]] = field(default_factory=list)
    asks: list[tuple[float, int]] = field(default_factory=list)
    tbq: float = 0.0
    tsq: float = 0.0
    atp: float = 0.0
    day: Candle | None = None
    minute: Candle | None = None


DETAIL_LTPC: Final = 0
DETAIL_FIRST_LEVEL: Final = 1
DETAIL_FULL: Final = 2


class _Series:
    """Per-instrument noise cursors, anchor and caches."""

    __slots__ = (
        "cp_cache",
        "day_high",
        "day_low",
        "day_open",
        "day_scanned",
        "day_start",
        "instrument",
        "iv_noise",
        "jitter",
        "jitter_seed",
        "log_anchor",
        "minute_cache",
        "oi_noise",
        "price_noise",
        "seed",
        "session",
        "underlying",
        "volume_cache",
    )

    def __init__(self, seed: int, instrument: Instrument, anchor_ms: int) -> None:
        self.instrument = instrument
        self.seed = stable_hash(f"{seed}:{instrument.instrument_key}")
        sigma = instrument.annual_volatility
        amplitudes = tuple(sigma * math.sqrt(span / YEAR_MS) for span in PRICE_SPANS)
        self.price_noise = MultiScaleNoise(self.seed, PRICE_SPANS, amplitudes)
        # Anchor the slow scales so that today's price sits near the instrument's base price
        # whatever the seed; history then drifts away from it into the past.
        self.log_anchor = math.log(instrument.base_price) - self.price_noise.partial(
            anchor_ms, SLOW_LEVEL
        )
        self.jitter_seed = self.seed ^ 0x5A5A5A5A
        self.oi_noise = MultiScaleNoise(self.seed ^ 0x01, OI_SPANS, (0.3, 0.5, 0.7, 1.0))
        self.iv_noise = MultiScaleNoise(self.seed ^ 0x02, IV_SPANS, (0.3, 0.5, 0.7, 1.0))
        self.volume_cache: tuple[int, list[float]] = (-1, [0.0])
        self.cp_cache: tuple[int, float] = (-1, 0.0)
        self.minute_cache: tuple[int, Candle | None] = (-1, None)
        self.session: tuple[int, int] = (0, 0)
        self.underlying: Instrument | None = None
        self.jitter: tuple[int, float] = (-1, 0.0)
        self.day_start = -1
        self.day_open = 0.0
        self.day_high = 0.0
        self.day_low = 0.0
        self.day_scanned = 0


class MarketModel:
    """Evaluates the simulated market for any instrument at any instant."""

    def __init__(self, seed: int, clock: MarketClock, anchor_day: dt.date | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.anchor_day = anchor_day or ist_date(_now_ms())
        self.anchor_ms = ist_ms(self.anchor_day)
        self._series: dict[str, _Series] = {}
        self._day_candles: OrderedDict[tuple[str, int], Candle | None] = OrderedDict()

    # ---- instruments -------------------------------------------------------------------

    def instrument(self, key: str) -> Instrument | None:
        return lookup(key, self.anchor_day)

    def _series_of(self, instrument: Instrument) -> _Series:
        series = self._series.get(instrument.instrument_key)
        if series is None:
            series = _Series(self.seed, instrument, self.anchor_ms)
            self._series[instrument.instrument_key] = series
        return series

    def fresh(self) -> MarketModel:
        """A model with the same path and separate caches (for work in another thread)."""
        return MarketModel(self.seed, self.clock, self.anchor_day)

    # ---- the price path ------------------------------------------------------------------

    def base_price(self, instrument: Instrument, ms: int, scan: bool = False) -> float:
        """The smooth path (no trade-to-trade jitter) of a cash instrument or index.

        `scan`: the caller jumps from one 15 s cell to another (candles, day range)."""
        return self._base(self._series_of(instrument), ms, scan)

    def _base(self, series: _Series, ms: int, scan: bool) -> float:
        drift = series.instrument.annual_drift * (ms - self.anchor_ms) / YEAR_MS
        noise = series.price_noise.sample(ms) if scan else series.price_noise.value(ms)
        return math.exp(series.log_anchor + drift + noise)

    def price(
        self, instrument: Instrument, ms: int, scan: bool = False, jitter: bool = True
    ) -> float:
        """The traded price at `ms`, unrounded (`jitter=False`: the smooth grid path)."""
        if instrument.is_derivative:
            return self._derivative_price(instrument, ms, scan, jitter)[0]
        return self._cash_price(self._series_of(instrument), ms, scan, jitter)

    def _cash_price(self, series: _Series, ms: int, scan: bool, jitter: bool) -> float:
        if not jitter:
            return self._base(series, ms, scan)
        cell = ms // JITTER_MS
        if series.jitter[0] != cell:
            series.jitter = (cell, JITTER * signed_unit(series.jitter_seed, 0, cell))
        return self._base(series, ms, scan) * (1.0 + series.jitter[1])

    def _underlying(self, instrument: Instrument) -> Instrument:
        series = self._series_of(instrument)
        if series.underlying is None:
            series.underlying = self.instrument(instrument.underlying_key or "")
            if series.underlying is None:  # pragma: no cover - universe names valid keys
                raise LookupError(instrument.instrument_key)
        return series.underlying

    def _years_to_expiry(self, instrument: Instrument, ms: int) -> float:
        expiry = instrument.expiry or self.anchor_day
        return max(0.0, (ist_ms(expiry, 15, 30) - ms) / YEAR_MS)

    def implied_volatility(self, instrument: Instrument, ms: int) -> float:
        series = self._series_of(instrument)
        return instrument.annual_volatility * math.exp(0.08 * series.iv_noise.value(ms))

    def _derivative_price(
        self, instrument: Instrument, ms: int, scan: bool = False, jitter: bool = True
    ) -> tuple[float, Greeks | None]:
        spot = self.price(self._underlying(instrument), ms, scan, jitter)
        years = self._years_to_expiry(instrument, ms)
        if instrument.instrument_type == "FUT":
            return spot * math.exp(RATE * years), None
        greeks = black_scholes(
            spot,
            instrument.strike_price or spot,
            years,
            RATE,
            self.implied_volatility(instrument, ms),
            instrument.instrument_type == "CE",
        )
        return greeks.price, greeks

    def ltp(self, instrument: Instrument, ms: int, scan: bool = False) -> float:
        tick = instrument.tick_size
        return max(tick, round_to_tick(self.price(instrument, ms, scan), tick))

    # ---- sessions --------------------------------------------------------------------------

    def session_at(self, instrument: Instrument, ms: int) -> tuple[int, int]:
        """The session that is running at `ms` or, if none, the last one that ended before."""
        cached = self._series_of(instrument).session
        if cached[0] <= ms < cached[1]:
            return cached
        found = self._find_session(instrument, ms)
        if ms < found[1]:
            self._series_of(instrument).session = found
        return found

    def _find_session(self, instrument: Instrument, ms: int) -> tuple[int, int]:
        day = ist_date(ms)
        for _ in range(30):
            window = self.clock.session(instrument.segment, day)
            if window is not None and window[0] <= ms:
                return window
            day = self.clock.previous_trading_day(day)
        raise LookupError("no trading session in the last 30 days")  # pragma: no cover

    def trade_time(self, instrument: Instrument, ms: int) -> tuple[int, tuple[int, int]]:
        """The instant whose price stands at `ms` (the last close when the market is shut)."""
        start, end = self.session_at(instrument, ms)
        return (ms if ms < end else end - 1), (start, end)

    def previous_close(self, instrument: Instrument, session_start: int) -> float:
        series = self._series_of(instrument)
        if series.cp_cache[0] == session_start:
            return series.cp_cache[1]
        _, previous_end = self.session_at(instrument, session_start - 1)
        close = self.ltp(instrument, previous_end - 1, scan=True)
        series.cp_cache = (session_start, close)
        return close

    # ---- volume and open interest ------------------------------------------------------------

    def _volume_prefix(self, series: _Series, session: tuple[int, int], block: int) -> list[float]:
        """Volume before each block of `session`, built as far as `block` (kept per session)."""
        cached_start, prefix = series.volume_cache
        if cached_start != session[0]:
            prefix = [0.0]
            series.volume_cache = (session[0], prefix)
        if len(prefix) > block:
            return prefix
        # the same as summing _block_volume, unrolled: day candles sum whole sessions
        start, end = session
        blocks = max(1, -(-(end - start) // VOLUME_BLOCK_MS))
        per_block = series.instrument.daily_volume / blocks / (1.0 + 0.8 / 3.0)
        seed, minute = series.seed ^ 0x03, start // MINUTE_MS
        total = prefix[-1]
        for index in range(len(prefix) - 1, block):
            position = 2.0 * (index + 0.5) / blocks - 1.0
            noise = 0.3 + 1.4 * unit(seed, minute, index)
            total += per_block * (1.0 + 0.8 * position * position) * noise
            prefix.append(total)
        return prefix

    def cumulative_volume(self, instrument: Instrument, session: tuple[int, int], ms: int) -> int:
        """Volume traded in `session` up to `ms` (monotonic in `ms`)."""
        if instrument.daily_volume <= 0:
            return 0
        series = self._series_of(instrument)
        start, end = session
        ms = min(max(ms, start), end)
        block, offset = divmod(ms - start, VOLUME_BLOCK_MS)
        prefix = self._volume_prefix(series, session, block + 1)
        total = prefix[block]
        if offset:
            # within a block trades come unevenly: x + a sin(2 pi m x) / (2 pi m) rises
            # monotonically from 0 to 1 for |a| < 1, so the block still sums to its volume
            shape = hash3(series.seed ^ 0x04, start // MINUTE_MS, block)
            amplitude = ((shape & 0xFFFF) / 65_536.0 - 0.5) * 1.6
            waves = 1 + (shape >> 16) % 4
            x = offset / VOLUME_BLOCK_MS
            angle = 2.0 * math.pi * waves
            fraction = x + amplitude * math.sin(angle * x) / angle
            total += (prefix[block + 1] - prefix[block]) * fraction
        lot = max(1, instrument.lot_size)
        return int(total // lot) * lot

    def open_interest(self, instrument: Instrument, ms: int) -> float:
        if not instrument.is_derivative:
            return 0.0
        series = self._series_of(instrument)
        base = instrument.daily_volume * 1.5
        lot = max(1, instrument.lot_size)
        return float(int(base * math.exp(0.15 * series.oi_noise.value(ms)) // lot) * lot)

    # ---- candles -------------------------------------------------------------------------------

    def _envelope(self, instrument: Instrument, price: float, ms: int) -> float:
        """How far a trade may stray from the grid path, relative to `price`."""
        if not instrument.is_derivative:
            return JITTER
        # an option moves less than its underlying in rupees (|delta| <= 1); the margin covers
        # carry and the implied volatility's drift between grid points
        spot = self.base_price(self._underlying(instrument), ms, scan=True)
        return min(0.05, 1.5 * JITTER * spot / max(price, instrument.tick_size))

    def candle(
        self,
        instrument: Instrument,
        session: tuple[int, int],
        start: int,
        end: int,
        ts: int | None = None,
        samples: int = 32,
    ) -> Candle:
        """The candle of trades in [start, end) of `session`, sampling the path on its grid."""
        step = max(GRID_MS, ((end - start) // samples) // GRID_MS * GRID_MS)
        first = -(-start // GRID_MS) * GRID_MS
        # extremes of the smooth path are at grid points; trades stray from it by the jitter
        high = low = self.price(instrument, start, scan=True, jitter=False)
        sample = first
        while sample < end:
            value = self.price(instrument, sample, scan=True, jitter=False)
            high, low = max(high, value), min(low, value)
            sample += step
        value = self.price(instrument, end, scan=True, jitter=False)  # the path's end point
        high, low = max(high, value), min(low, value)
        opening = self.ltp(instrument, start, scan=True)
        closing = self.ltp(instrument, end - 1, scan=True)
        envelope = self._envelope(instrument, high, start)
        tick = instrument.tick_size
        top = max(_ceil_tick(high * (1.0 + envelope), tick), opening, closing)
        bottom = min(max(tick, _floor_tick(low * (1.0 - envelope), tick)), opening, closing)
        volume = self.cumulative_volume(instrument, session, end) - self.cumulative_volume(
            instrument, session, start
        )
        return Candle(
            ts=start if ts is None else ts,
            open=opening,
            high=top,
            low=bottom,
            close=closing,
            volume=volume,
            oi=self.open_interest(instrument, end - 1),
        )

    def day_candle(self, instrument: Instrument, day: dt.date) -> Candle | None:
        """The whole session of `day` as one candle (cached), or None if it did not trade."""
        cache_key = (instrument.instrument_key, day.toordinal())
        if cache_key in self._day_candles:
            self._day_candles.move_to_end(cache_key)
            return self._day_candles[cache_key]
        window = self.clock.session(instrument.segment, day)
        found = None
        if window is not None and self.is_listed(instrument, day):
            found = self.candle(
                instrument, window, window[0], window[1], ts=ist_ms(day), samples=DAY_SAMPLES
            )
        self._day_candles[cache_key] = found
        if len(self._day_candles) > 50_000:
            self._day_candles.popitem(last=False)
        return found

    def is_listed(self, instrument: Instrument, day: dt.date) -> bool:
        """Derivatives trade for 120 days up to their expiry; the rest always."""
        if instrument.expiry is None:
            return True
        return instrument.expiry - dt.timedelta(days=120) <= day <= instrument.expiry

    def _minute_candle(self, instrument: Instrument, session: tuple[int, int], ms: int) -> Candle:
        series = self._series_of(instrument)
        minute = (ms // MINUTE_MS - 1) * MINUTE_MS
        if series.minute_cache[0] == minute and series.minute_cache[1] is not None:
            return series.minute_cache[1]
        start = max(minute, session[0])
        found = self.candle(instrument, session, start, minute + MINUTE_MS, ts=minute)
        series.minute_cache = (minute, found)
        return found

    def _day_range(
        self, instrument: Instrument, session: tuple[int, int], ms: int, ltp: float
    ) -> tuple[float, float]:
        """Today's high/low so far: sampled from the path, widened by every price shown."""
        series = self._series_of(instrument)
        start = session[0]
        if series.day_start != start:
            opening = self.ltp(instrument, start, scan=True)
            series.day_start, series.day_high, series.day_low = start, opening, opening
            series.day_open = opening
            series.day_scanned = start
        step = DAY_RANGE_STEP_MS
        while series.day_scanned + step <= ms:
            series.day_scanned += step
            value = self.ltp(instrument, series.day_scanned, scan=True)
            series.day_high = max(series.day_high, value)
            series.day_low = min(series.day_low, value)
        series.day_high = max(series.day_high, ltp)
        series.day_low = min(series.day_low, ltp)
        return series.day_high, series.day_low

    # ---- the feed's view -------------------------------------------------------------------------

    def snapshot(
        self, instrument: Instrument, now_ms: int, detail: int = DETAIL_LTPC, depth: int = 5
    ) -> Snapshot:
        """The market of `instrument` as the feed shows it at `now_ms`."""
        series = self._series_of(instrument)
        session = series.session
        if session[0] <= now_ms < session[1]:  # the common case: the market is open
            ms = now_ms
        else:
            ms, session = self.trade_time(instrument, now_ms)
        greeks: Greeks | None = None
        tick = instrument.tick_size
        if instrument.is_option:
            raw, greeks = self._derivative_price(instrument, ms)
        elif instrument.is_derivative:
            raw = self._derivative_price(instrument, ms)[0]
        else:
            raw = self._cash_price(series, ms, False, True)
        ltp = max(tick, round(round(raw / tick) * tick, 2))
        ltq = 0
        if not instrument.is_index:
            ltq = max(1, instrument.lot_size) * (1 + hash3(series.seed, 7, ms) % 20)
        cp_start, cp = series.cp_cache
        if cp_start != session[0]:
            cp = self.previous_close(instrument, session[0])
        snap = Snapshot(ltp=ltp, ltt=ms, ltq=ltq, cp=cp, detail=detail)
        if detail == DETAIL_LTPC or instrument.is_index:
            if detail == DETAIL_FULL:
                snap.day = self._today(instrument, session, ms, ltp, 0)
                snap.minute = self._last_minute(instrument, session, ms)
            return snap
        snap.vtt = self.cumulative_volume(instrument, session, ms)
        snap.oi = self.open_interest(instrument, ms)
        if greeks is not None:
            snap.greeks = greeks
            snap.iv = round(self.implied_volatility(instrument, ms), 4)
        snap.bids, snap.asks = self._depth(instrument, series.seed, ms, ltp, depth)
        if detail == DETAIL_FULL:
            day = self._today(instrument, session, ms, ltp, snap.vtt)
            snap.day = day
            snap.minute = self._last_minute(instrument, session, ms)
            snap.atp = round((day.open + day.high + day.low + ltp) / 4.0, 2)
            lot = max(1, instrument.lot_size)
            snap.tbq = float(lot * (2_000 + hash3(series.seed, 8, ms) % 50_000))
            snap.tsq = float(lot * (2_000 + hash3(series.seed, 9, ms) % 50_000))
        return snap

    def _today(
        self, instrument: Instrument, session: tuple[int, int], ms: int, ltp: float, volume: int
    ) -> Candle:
        high, low = self._day_range(instrument, session, ms, ltp)
        midnight = ((session[0] + IST_OFFSET_MS) // MS_PER_DAY) * MS_PER_DAY - IST_OFFSET_MS
        opening = self._series_of(instrument).day_open
        return Candle(midnight, opening, high, low, ltp, volume, 0.0)

    def _last_minute(
        self, instrument: Instrument, session: tuple[int, int], ms: int
    ) -> Candle | None:
        if ms // MINUTE_MS * MINUTE_MS - MINUTE_MS < session[0] - MINUTE_MS + 1:
            return None
        return self._minute_candle(instrument, session, ms)

    def _depth(
        self, instrument: Instrument, seed: int, ms: int, ltp: float, levels: int
    ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """A believable order book around `ltp`: bids below asks, gaps of 1-3 ticks."""
        tick = round(instrument.tick_size * 100)  # in paise, so prices stay exact
        lot = max(1, instrument.lot_size)
        size = 40 if instrument.is_derivative else 400
        state = hash3(seed, 10, ms)
        bid = round(ltp * 100) - tick * (state & 1)
        ask = bid + tick * (1 + ((state >> 1) & 1))
        bids: list[tuple[float, int]] = []
        asks: list[tuple[float, int]] = []
        for _ in range(levels):
            state = (state * _LCG_MULTIPLIER + _LCG_INCREMENT) & _MASK64
            bids.append((bid / 100 if bid > 0 else 0.0, lot * (1 + (state >> 24) % size)))
            asks.append((ask / 100, lot * (1 + (state >> 40) % size)))
            bid -= tick * (1 + (state >> 8) % 3)
            ask += tick * (1 + (state >> 16) % 3)
        return bids, asks


def _now_ms() -> int:
    from services.simulator.clock import now_ms

    return now_ms()
