"""`PriceModel`: the price path, what an instrument trades at at any instant.

Owns each instrument's price noise (the smooth multi-scale path, anchored so that today's price
sits near the instrument's base price; the trade-to-trade jitter; the implied volatility's
drift), the instrument lookup for the anchor day, and derivative pricing from the underlying's
path (cost of carry for futures, Black-Scholes for options). Pure and deterministic: a function
of (seed, instrument key, time); the only state is noise cursors and caches.

It must not know sessions, volumes, candles or the feed: prices exist at every instant, whether
or not a market is open.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final

from services.simulator.clock import ist_ms
from services.simulator.greeks import Greeks, black_scholes
from services.simulator.noise import YEAR_MS, MultiScaleNoise, signed_unit
from services.simulator.universe import Instrument, lookup, stable_hash

__all__ = ["JITTER", "PriceModel", "round_to_tick"]

RATE: Final = 0.065  # risk-free rate for option pricing and futures carry
JITTER: Final = 0.00015  # sub-grid trade-to-trade noise, relative to the price
JITTER_MS: Final = 250

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
IV_SPANS: Final = (300_000, 1_800_000, 10_800_000, 86_400_000)


def round_to_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 2)


class _Path:
    """Per-instrument noise cursors, anchor and caches of the price path."""

    __slots__ = (
        "instrument",
        "iv_noise",
        "jitter",
        "jitter_seed",
        "log_anchor",
        "price_noise",
        "seed",
        "underlying",
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
        self.iv_noise = MultiScaleNoise(self.seed ^ 0x02, IV_SPANS, (0.3, 0.5, 0.7, 1.0))
        self.jitter: tuple[int, float] = (-1, 0.0)
        self.underlying: Instrument | None = None


class PriceModel:
    """Prices of any instrument at any instant, for one seed and anchor day."""

    def __init__(self, seed: int, anchor_day: dt.date) -> None:
        self.seed = seed
        self.anchor_day = anchor_day
        self.anchor_ms = ist_ms(anchor_day)
        self._paths: dict[str, _Path] = {}

    def instrument(self, key: str) -> Instrument | None:
        return lookup(key, self.anchor_day)

    def _path_of(self, instrument: Instrument) -> _Path:
        path = self._paths.get(instrument.instrument_key)
        if path is None:
            path = _Path(self.seed, instrument, self.anchor_ms)
            self._paths[instrument.instrument_key] = path
        return path

    def seed_of(self, instrument: Instrument) -> int:
        """The instrument's own seed: the root of all its randomness (volumes, depth too)."""
        return self._path_of(instrument).seed

    def base_price(self, instrument: Instrument, ms: int, scan: bool = False) -> float:
        """The smooth path (no trade-to-trade jitter) of a cash instrument or index.

        `scan`: the caller jumps from one 15 s cell to another (candles, day range)."""
        return self._base(self._path_of(instrument), ms, scan)

    def _base(self, path: _Path, ms: int, scan: bool) -> float:
        drift = path.instrument.annual_drift * (ms - self.anchor_ms) / YEAR_MS
        noise = path.price_noise.sample(ms) if scan else path.price_noise.value(ms)
        return math.exp(path.log_anchor + drift + noise)

    def price(
        self, instrument: Instrument, ms: int, scan: bool = False, jitter: bool = True
    ) -> float:
        """The traded price at `ms`, unrounded (`jitter=False`: the smooth grid path)."""
        if instrument.is_derivative:
            return self.derivative_price(instrument, ms, scan, jitter)[0]
        return self.cash_price(instrument, ms, scan, jitter)

    def cash_price(self, instrument: Instrument, ms: int, scan: bool, jitter: bool) -> float:
        """The price of a cash instrument or index (not a derivative: see `price`)."""
        path = self._path_of(instrument)
        if not jitter:
            return self._base(path, ms, scan)
        cell = ms // JITTER_MS
        if path.jitter[0] != cell:
            path.jitter = (cell, JITTER * signed_unit(path.jitter_seed, 0, cell))
        return self._base(path, ms, scan) * (1.0 + path.jitter[1])

    def underlying(self, instrument: Instrument) -> Instrument:
        path = self._path_of(instrument)
        if path.underlying is None:
            path.underlying = self.instrument(instrument.underlying_key or "")
            if path.underlying is None:  # pragma: no cover - universe names valid keys
                raise LookupError(instrument.instrument_key)
        return path.underlying

    def _years_to_expiry(self, instrument: Instrument, ms: int) -> float:
        expiry = instrument.expiry or self.anchor_day
        return max(0.0, (ist_ms(expiry, 15, 30) - ms) / YEAR_MS)

    def implied_volatility(self, instrument: Instrument, ms: int) -> float:
        path = self._path_of(instrument)
        return instrument.annual_volatility * math.exp(0.08 * path.iv_noise.value(ms))

    def derivative_price(
        self, instrument: Instrument, ms: int, scan: bool = False, jitter: bool = True
    ) -> tuple[float, Greeks | None]:
        """A future's or an option's price from its underlying's; an option's greeks too."""
        spot = self.price(self.underlying(instrument), ms, scan, jitter)
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
