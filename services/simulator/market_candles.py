"""`CandleModel`: candles read off the price path: any span, whole days, the last minute, today.

Owns how a candle is made exact and cheap (the smooth path's extremes are at its 15 s grid
points; trades stray from it by at most an envelope), the day candle of a past session (cached,
and only while the instrument is listed), the last complete minute, and today's running
high/low, which also takes in every price the feed has shown, so the `1d` candle always
contains the ticks: the one piece of state here that is more than a cache.

It must not price, time or size trades itself (`PriceModel`, `SessionModel`) nor fill
snapshots: it returns `Candle`s.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from services.simulator.clock import IST_OFFSET_MS, MS_PER_DAY, MarketClock, ist_ms
from services.simulator.market_prices import JITTER, PriceModel
from services.simulator.market_sessions import MINUTE_MS, SessionModel
from services.simulator.noise import GRID_MS
from services.simulator.universe import Instrument

__all__ = ["Candle", "CandleModel", "is_listed"]

DAY_SAMPLES: Final = 16  # path samples per historical day candle
DAY_RANGE_STEP_MS: Final = 60 * MINUTE_MS  # how finely a cold start samples today's range
DAY_CANDLE_CACHE: Final = 50_000


@dataclass(slots=True)
class Candle:
    ts: int  # start, ms since epoch
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: float


def is_listed(instrument: Instrument, day: dt.date) -> bool:
    """Derivatives trade for 120 days up to their expiry; the rest always."""
    if instrument.expiry is None:
        return True
    return instrument.expiry - dt.timedelta(days=120) <= day <= instrument.expiry


def _floor_tick(price: float, tick: float) -> float:
    return round(math.floor(price / tick + 1e-9) * tick, 2)


def _ceil_tick(price: float, tick: float) -> float:
    return round(math.ceil(price / tick - 1e-9) * tick, 2)


class _Today:
    """Per-instrument: today's running range and the last minute candle."""

    __slots__ = ("day_high", "day_low", "day_open", "day_scanned", "day_start", "minute_cache")

    def __init__(self) -> None:
        self.minute_cache: tuple[int, Candle | None] = (-1, None)
        self.day_start = -1
        self.day_open = 0.0
        self.day_high = 0.0
        self.day_low = 0.0
        self.day_scanned = 0


class CandleModel:
    """Candles of any instrument, from the prices and sessions it is given."""

    def __init__(self, clock: MarketClock, prices: PriceModel, sessions: SessionModel) -> None:
        self.clock = clock
        self.prices = prices
        self.sessions = sessions
        self._today: dict[str, _Today] = {}
        self._day_candles: OrderedDict[tuple[str, int], Candle | None] = OrderedDict()

    def _today_of(self, instrument: Instrument) -> _Today:
        today = self._today.get(instrument.instrument_key)
        if today is None:
            today = _Today()
            self._today[instrument.instrument_key] = today
        return today

    def _envelope(self, instrument: Instrument, price: float, ms: int) -> float:
        """How far a trade may stray from the grid path, relative to `price`."""
        if not instrument.is_derivative:
            return JITTER
        # an option moves less than its underlying in rupees (|delta| <= 1); the margin covers
        # carry and the implied volatility's drift between grid points
        spot = self.prices.base_price(self.prices.underlying(instrument), ms, scan=True)
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
        price, ltp = self.prices.price, self.prices.ltp
        step = max(GRID_MS, ((end - start) // samples) // GRID_MS * GRID_MS)
        first = -(-start // GRID_MS) * GRID_MS
        # extremes of the smooth path are at grid points; trades stray from it by the jitter
        high = low = price(instrument, start, scan=True, jitter=False)
        sample = first
        while sample < end:
            value = price(instrument, sample, scan=True, jitter=False)
            high, low = max(high, value), min(low, value)
            sample += step
        value = price(instrument, end, scan=True, jitter=False)  # the path's end point
        high, low = max(high, value), min(low, value)
        opening = ltp(instrument, start, scan=True)
        closing = ltp(instrument, end - 1, scan=True)
        envelope = self._envelope(instrument, high, start)
        tick = instrument.tick_size
        top = max(_ceil_tick(high * (1.0 + envelope), tick), opening, closing)
        bottom = min(max(tick, _floor_tick(low * (1.0 - envelope), tick)), opening, closing)
        volume = self.sessions.cumulative_volume(
            instrument, session, end
        ) - self.sessions.cumulative_volume(instrument, session, start)
        return Candle(
            ts=start if ts is None else ts,
            open=opening,
            high=top,
            low=bottom,
            close=closing,
            volume=volume,
            oi=self.sessions.open_interest(instrument, end - 1),
        )

    def day_candle(self, instrument: Instrument, day: dt.date) -> Candle | None:
        """The whole session of `day` as one candle (cached), or None if it did not trade."""
        cache_key = (instrument.instrument_key, day.toordinal())
        if cache_key in self._day_candles:
            self._day_candles.move_to_end(cache_key)
            return self._day_candles[cache_key]
        window = self.clock.session(instrument.segment, day)
        found = None
        if window is not None and is_listed(instrument, day):
            found = self.candle(
                instrument, window, window[0], window[1], ts=ist_ms(day), samples=DAY_SAMPLES
            )
        self._day_candles[cache_key] = found
        if len(self._day_candles) > DAY_CANDLE_CACHE:
            self._day_candles.popitem(last=False)
        return found

    def last_minute(
        self, instrument: Instrument, session: tuple[int, int], ms: int
    ) -> Candle | None:
        """The last complete minute of `session` before `ms` (cached), None in its first."""
        if ms // MINUTE_MS * MINUTE_MS - MINUTE_MS < session[0] - MINUTE_MS + 1:
            return None
        today = self._today_of(instrument)
        minute = (ms // MINUTE_MS - 1) * MINUTE_MS
        if today.minute_cache[0] == minute and today.minute_cache[1] is not None:
            return today.minute_cache[1]
        start = max(minute, session[0])
        found = self.candle(instrument, session, start, minute + MINUTE_MS, ts=minute)
        today.minute_cache = (minute, found)
        return found

    def today(
        self, instrument: Instrument, session: tuple[int, int], ms: int, ltp: float, volume: int
    ) -> Candle:
        """Today's candle so far, closing at `ltp` (the price shown) with `volume`."""
        high, low = self._day_range(instrument, session, ms, ltp)
        midnight = ((session[0] + IST_OFFSET_MS) // MS_PER_DAY) * MS_PER_DAY - IST_OFFSET_MS
        opening = self._today_of(instrument).day_open
        return Candle(midnight, opening, high, low, ltp, volume, 0.0)

    def _day_range(
        self, instrument: Instrument, session: tuple[int, int], ms: int, ltp: float
    ) -> tuple[float, float]:
        """Today's high/low so far: sampled from the path, widened by every price shown."""
        today = self._today_of(instrument)
        start = session[0]
        if today.day_start != start:
            opening = self.prices.ltp(instrument, start, scan=True)
            today.day_start, today.day_high, today.day_low = start, opening, opening
            today.day_open = opening
            today.day_scanned = start
        step = DAY_RANGE_STEP_MS
        while today.day_scanned + step <= ms:
            today.day_scanned += step
            value = self.prices.ltp(instrument, today.day_scanned, scan=True)
            today.day_high = max(today.day_high, value)
            today.day_low = min(today.day_low, value)
        today.day_high = max(today.day_high, ltp)
        today.day_low = min(today.day_low, ltp)
        return today.day_high, today.day_low
