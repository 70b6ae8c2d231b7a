"""The simulated market: prices, volumes, depth, greeks and candles as functions of time.

`MarketModel` is the facade the rest of the simulator uses; it owns only the composition of its
units and the anchor day. Pure and deterministic: everything is computed from (seed,
instrument key, time) by the seeded noise in `noise.py`, so history (candles) and the live feed
evaluate one and the same price path and a chart of both is continuous.

- `market_prices.PriceModel`: the price path, derivatives priced from their underlying's
  (Black-Scholes for options, cost of carry for futures), implied volatility.
- `market_sessions.SessionModel`: sessions, trade time, previous close, volume, open interest.
- `market_candles.CandleModel`: candles of any span, day candles, the last minute, and today's
  running high/low, which also takes in every price the feed has shown, so the `1d` candle
  always contains the ticks.
- `market_snapshot.SnapshotBuilder`: the feed's view of one instrument at one instant.

The only state kept is caches and that running day high/low. This module must not compute
anything itself: each question goes to the unit that owns it.
"""

from __future__ import annotations

import datetime as dt

from services.simulator.clock import MarketClock, ist_date, ist_ms
from services.simulator.market_candles import Candle, CandleModel, is_listed
from services.simulator.market_prices import PriceModel
from services.simulator.market_sessions import SessionModel
from services.simulator.market_snapshot import (
    DETAIL_FIRST_LEVEL,
    DETAIL_FULL,
    DETAIL_LTPC,
    Snapshot,
    SnapshotBuilder,
)
from services.simulator.universe import Instrument

__all__ = [
    "DETAIL_FIRST_LEVEL",
    "DETAIL_FULL",
    "DETAIL_LTPC",
    "Candle",
    "MarketModel",
    "Snapshot",
]


class MarketModel:
    """Evaluates the simulated market for any instrument at any instant."""

    def __init__(self, seed: int, clock: MarketClock, anchor_day: dt.date | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.anchor_day = anchor_day or ist_date(_now_ms())
        self.anchor_ms = ist_ms(self.anchor_day)
        self._prices = PriceModel(seed, self.anchor_day)
        self._sessions = SessionModel(clock, self._prices)
        self._candles = CandleModel(clock, self._prices, self._sessions)
        self._snapshots = SnapshotBuilder(self._prices, self._sessions, self._candles)

    def instrument(self, key: str) -> Instrument | None:
        return self._prices.instrument(key)

    def fresh(self) -> MarketModel:
        """A model with the same path and separate caches (for work in another thread)."""
        return MarketModel(self.seed, self.clock, self.anchor_day)

    # ---- prices (market_prices) ----------------------------------------------------------

    def base_price(self, instrument: Instrument, ms: int, scan: bool = False) -> float:
        """The smooth path (no trade-to-trade jitter) of a cash instrument or index.

        `scan`: the caller jumps from one 15 s cell to another (candles, day range)."""
        return self._prices.base_price(instrument, ms, scan)

    def price(
        self, instrument: Instrument, ms: int, scan: bool = False, jitter: bool = True
    ) -> float:
        """The traded price at `ms`, unrounded (`jitter=False`: the smooth grid path)."""
        return self._prices.price(instrument, ms, scan, jitter)

    def ltp(self, instrument: Instrument, ms: int, scan: bool = False) -> float:
        return self._prices.ltp(instrument, ms, scan)

    def implied_volatility(self, instrument: Instrument, ms: int) -> float:
        return self._prices.implied_volatility(instrument, ms)

    # ---- sessions, volume, open interest (market_sessions) --------------------------------

    def session_at(self, instrument: Instrument, ms: int) -> tuple[int, int]:
        """The session that is running at `ms` or, if none, the last one that ended before."""
        return self._sessions.session_at(instrument, ms)

    def trade_time(self, instrument: Instrument, ms: int) -> tuple[int, tuple[int, int]]:
        """The instant whose price stands at `ms` (the last close when the market is shut)."""
        return self._sessions.trade_time(instrument, ms)

    def previous_close(self, instrument: Instrument, session_start: int) -> float:
        return self._sessions.previous_close(instrument, session_start)

    def cumulative_volume(self, instrument: Instrument, session: tuple[int, int], ms: int) -> int:
        """Volume traded in `session` up to `ms` (monotonic in `ms`)."""
        return self._sessions.cumulative_volume(instrument, session, ms)

    def open_interest(self, instrument: Instrument, ms: int) -> float:
        return self._sessions.open_interest(instrument, ms)

    # ---- candles (market_candles) ----------------------------------------------------------

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
        return self._candles.candle(instrument, session, start, end, ts, samples)

    def day_candle(self, instrument: Instrument, day: dt.date) -> Candle | None:
        """The whole session of `day` as one candle (cached), or None if it did not trade."""
        return self._candles.day_candle(instrument, day)

    def is_listed(self, instrument: Instrument, day: dt.date) -> bool:
        """Derivatives trade for 120 days up to their expiry; the rest always."""
        return is_listed(instrument, day)

    # ---- the feed's view (market_snapshot) -------------------------------------------------

    def snapshot(
        self, instrument: Instrument, now_ms: int, detail: int = DETAIL_LTPC, depth: int = 5
    ) -> Snapshot:
        """The market of `instrument` as the feed shows it at `now_ms`."""
        return self._snapshots.snapshot(instrument, now_ms, detail, depth)


def _now_ms() -> int:
    from services.simulator.clock import now_ms

    return now_ms()
