"""`SessionModel`: when an instrument trades and how much: sessions, volume, open interest.

Owns the session running at an instant (or the last one before it) and so the instant whose
price stands when the market is shut, the previous session's close, the volume traded in a
session so far (blocks of 15 minutes, heavier at the open and the close, unevenly spread
within a block, monotonic in time) and open interest. Pure and deterministic, from the
instrument's seed; the only state is caches.

It must not price anything itself (prices come from `PriceModel`) nor build candles or
snapshots.
"""

from __future__ import annotations

import math
from typing import Final

from services.simulator.clock import MarketClock, ist_date
from services.simulator.market_prices import PriceModel
from services.simulator.noise import MultiScaleNoise, hash3, unit
from services.simulator.universe import Instrument

__all__ = ["MINUTE_MS", "SessionModel"]

VOLUME_BLOCK_MS: Final = 900_000
MINUTE_MS: Final = 60_000
OI_SPANS: Final = (1_800_000, 10_800_000, 86_400_000, 604_800_000)


class _Activity:
    """Per-instrument caches of sessions and volumes, and the open interest's noise."""

    __slots__ = ("cp_cache", "oi_noise", "seed", "session", "volume_cache")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.oi_noise = MultiScaleNoise(seed ^ 0x01, OI_SPANS, (0.3, 0.5, 0.7, 1.0))
        self.volume_cache: tuple[int, list[float]] = (-1, [0.0])
        self.cp_cache: tuple[int, float] = (-1, 0.0)
        self.session: tuple[int, int] = (0, 0)


class SessionModel:
    """Sessions, volume and open interest of any instrument, on `clock`'s hours."""

    def __init__(self, clock: MarketClock, prices: PriceModel) -> None:
        self.clock = clock
        self.prices = prices
        self._activity: dict[str, _Activity] = {}

    def _activity_of(self, instrument: Instrument) -> _Activity:
        activity = self._activity.get(instrument.instrument_key)
        if activity is None:
            activity = _Activity(self.prices.seed_of(instrument))
            self._activity[instrument.instrument_key] = activity
        return activity

    # ---- sessions --------------------------------------------------------------------------

    def session_at(self, instrument: Instrument, ms: int) -> tuple[int, int]:
        """The session that is running at `ms` or, if none, the last one that ended before."""
        activity = self._activity_of(instrument)
        cached = activity.session
        if cached[0] <= ms < cached[1]:
            return cached
        found = self._find_session(instrument, ms)
        if ms < found[1]:
            activity.session = found
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
        activity = self._activity_of(instrument)
        if activity.cp_cache[0] == session_start:
            return activity.cp_cache[1]
        _, previous_end = self.session_at(instrument, session_start - 1)
        close = self.prices.ltp(instrument, previous_end - 1, scan=True)
        activity.cp_cache = (session_start, close)
        return close

    # ---- volume and open interest ------------------------------------------------------------

    def _volume_prefix(
        self, instrument: Instrument, activity: _Activity, session: tuple[int, int], block: int
    ) -> list[float]:
        """Volume before each block of `session`, built as far as `block` (kept per session)."""
        cached_start, prefix = activity.volume_cache
        if cached_start != session[0]:
            prefix = [0.0]
            activity.volume_cache = (session[0], prefix)
        if len(prefix) > block:
            return prefix
        # the same as summing _block_volume, unrolled: day candles sum whole sessions
        start, end = session
        blocks = max(1, -(-(end - start) // VOLUME_BLOCK_MS))
        per_block = instrument.daily_volume / blocks / (1.0 + 0.8 / 3.0)
        seed, minute = activity.seed ^ 0x03, start // MINUTE_MS
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
        activity = self._activity_of(instrument)
        start, end = session
        ms = min(max(ms, start), end)
        block, offset = divmod(ms - start, VOLUME_BLOCK_MS)
        prefix = self._volume_prefix(instrument, activity, session, block + 1)
        total = prefix[block]
        if offset:
            # within a block trades come unevenly: x + a sin(2 pi m x) / (2 pi m) rises
            # monotonically from 0 to 1 for |a| < 1, so the block still sums to its volume
            shape = hash3(activity.seed ^ 0x04, start // MINUTE_MS, block)
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
        activity = self._activity_of(instrument)
        base = instrument.daily_volume * 1.5
        lot = max(1, instrument.lot_size)
        return float(int(base * math.exp(0.15 * activity.oi_noise.value(ms)) // lot) * lot)
