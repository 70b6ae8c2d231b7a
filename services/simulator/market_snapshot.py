"""`SnapshotBuilder`: one instrument's market at one instant, as the feed shows it.

Owns the `Snapshot` and how much of it is filled in (`DETAIL_*`: last price and close; then
volume, open interest, greeks and depth; then today's and the last minute's candles, average
price and total buy/sell quantities), the last traded quantity, and the order book around the
last price (`order_book`: bids below asks, gaps of 1-3 ticks, sizes from the instrument's seed).
The book is quoted afresh once every `BOOK_REFRESH_MS` (at a phase of its own per instrument)
around the price of that instant, and shown unchanged until the next quote, the way exchanges
broadcast depth snapshots: so a live tick between two quotes has an unchanged book, which the
feed leaves out (Upstox's partial ticks). Pure and deterministic; its only state is a cache of
each instrument's current book.

It must not compute prices, sessions, volumes or candles itself (`PriceModel`, `SessionModel`,
`CandleModel`) nor know the wire format (`frames`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from services.simulator.greeks import Greeks
from services.simulator.market_candles import Candle, CandleModel
from services.simulator.market_prices import PriceModel, round_to_tick
from services.simulator.market_sessions import SessionModel
from services.simulator.noise import hash3
from services.simulator.universe import Instrument

__all__ = [
    "BOOK_REFRESH_MS",
    "DETAIL_FIRST_LEVEL",
    "DETAIL_FULL",
    "DETAIL_LTPC",
    "Snapshot",
    "SnapshotBuilder",
    "order_book",
]

DETAIL_LTPC: Final = 0
DETAIL_FIRST_LEVEL: Final = 1
DETAIL_FULL: Final = 2

BOOK_REFRESH_MS: Final = 1000

_LCG_MULTIPLIER: Final = 6364136223846793005
_LCG_INCREMENT: Final = 1442695040888963407
_MASK64: Final = (1 << 64) - 1

Book = tuple[list[tuple[float, int]], list[tuple[float, int]]]


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


def order_book(instrument: Instrument, seed: int, ms: int, ltp: float, levels: int) -> Book:
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


class SnapshotBuilder:
    """Fills `Snapshot`s from the prices, sessions and candles it is given."""

    def __init__(self, prices: PriceModel, sessions: SessionModel, candles: CandleModel) -> None:
        self.prices = prices
        self.sessions = sessions
        self.candles = candles
        self._books: dict[str, tuple[int, Book]] = {}  # key -> (quoted at, book)

    def _traded(self, instrument: Instrument, ms: int) -> tuple[float, Greeks | None]:
        """The unrounded price traded at `ms`, with an option's greeks."""
        if instrument.is_option:
            return self.prices.derivative_price(instrument, ms)
        if instrument.is_derivative:
            return self.prices.derivative_price(instrument, ms)[0], None
        return self.prices.cash_price(instrument, ms, False, True), None

    def _book(self, instrument: Instrument, seed: int, ms: int, levels: int) -> Book:
        """The book standing at `ms`: the one quoted at the last refresh, around that instant's
        price (cached: every tick until the next refresh shows the same book)."""
        quoted = ms - (ms + seed) % BOOK_REFRESH_MS
        cached = self._books.get(instrument.instrument_key)
        if cached is None or cached[0] != quoted or len(cached[1][0]) < levels:
            tick = instrument.tick_size
            price = max(tick, round_to_tick(self._traded(instrument, quoted)[0], tick))
            cached = (quoted, order_book(instrument, seed, quoted, price, levels))
            self._books[instrument.instrument_key] = cached
        bids, asks = cached[1]
        return bids[:levels], asks[:levels]

    def snapshot(
        self, instrument: Instrument, now_ms: int, detail: int = DETAIL_LTPC, depth: int = 5
    ) -> Snapshot:
        """The market of `instrument` as the feed shows it at `now_ms`."""
        ms, session = self.sessions.trade_time(instrument, now_ms)
        seed = self.prices.seed_of(instrument)
        raw, greeks = self._traded(instrument, ms)
        tick = instrument.tick_size
        ltp = max(tick, round_to_tick(raw, tick))
        ltq = 0
        if not instrument.is_index:
            ltq = max(1, instrument.lot_size) * (1 + hash3(seed, 7, ms) % 20)
        cp = self.sessions.previous_close(instrument, session[0])
        snap = Snapshot(ltp=ltp, ltt=ms, ltq=ltq, cp=cp, detail=detail)
        if detail == DETAIL_LTPC or instrument.is_index:
            if detail == DETAIL_FULL:
                snap.day = self.candles.today(instrument, session, ms, ltp, 0)
                snap.minute = self.candles.last_minute(instrument, session, ms)
            return snap
        snap.vtt = self.sessions.cumulative_volume(instrument, session, ms)
        snap.oi = self.sessions.open_interest(instrument, ms)
        if greeks is not None:
            snap.greeks = greeks
            snap.iv = round(self.prices.implied_volatility(instrument, ms), 4)
        snap.bids, snap.asks = self._book(instrument, seed, ms, depth)
        if detail == DETAIL_FULL:
            day = self.candles.today(instrument, session, ms, ltp, snap.vtt)
            snap.day = day
            snap.minute = self.candles.last_minute(instrument, session, ms)
            snap.atp = round((day.open + day.high + day.low + ltp) / 4.0, 2)
            lot = max(1, instrument.lot_size)
            snap.tbq = float(lot * (2_000 + hash3(seed, 8, ms) % 50_000))
            snap.tsq = float(lot * (2_000 + hash3(seed, 9, ms) % 50_000))
        return snap
