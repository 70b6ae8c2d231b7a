"""Seeded, stateless randomness: the same (seed, coordinates) give the same number anywhere.

`MultiScaleNoise` is the heart of the price model: value noise summed over time scales from
15 seconds to half a year, each scale's amplitude growing with the square root of its span, as a
random walk's would. It is a pure function of time, so any past instant can be evaluated
directly (history) and the live feed evaluates the same function at "now" (continuity). Every
span is a multiple of 15 s, so the path is linear between 15 s grid points: a candle's extremes
are at grid points, which makes candles exact and cheap.
"""

from __future__ import annotations

from typing import Final

MASK64: Final = (1 << 64) - 1
GRID_MS: Final = 15_000
YEAR_MS: Final = 365 * 86_400_000
_GOLDEN: Final = 0x9E3779B97F4A7C15
_TO_UNIT: Final = 2.0 / float(1 << 64)


def mix64(value: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit integer hash."""
    value = (value + _GOLDEN) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def hash3(seed: int, a: int, b: int) -> int:
    return mix64((seed + a * _GOLDEN + b * 0xC2B2AE3D27D4EB4F) & MASK64)


def signed_unit(seed: int, a: int, b: int) -> float:
    """A number in [-1, 1) determined by (seed, a, b)."""
    return hash3(seed, a, b) * _TO_UNIT - 1.0


def unit(seed: int, a: int, b: int) -> float:
    """A number in [0, 1) determined by (seed, a, b)."""
    return hash3(seed, a, b) * (_TO_UNIT / 2.0)


class MultiScaleNoise:
    """Sum over scales of linearly interpolated random values on each scale's grid.

    Keeps the current cell of each scale, so evaluating at increasing times (the live feed, a
    candle scan) costs a few multiplications per scale.
    """

    __slots__ = (
        "_amplitudes",
        "_cells",
        "_grid_cell",
        "_offset",
        "_seed",
        "_slope",
        "_spans",
        "_v0",
        "_v1",
    )

    def __init__(self, seed: int, spans: tuple[int, ...], amplitudes: tuple[float, ...]) -> None:
        if len(spans) != len(amplitudes) or any(span % GRID_MS for span in spans):
            raise ValueError("spans must be multiples of the 15 s grid, one amplitude each")
        self._seed = seed
        self._spans = spans
        self._amplitudes = amplitudes
        self._cells = [-(1 << 62)] * len(spans)
        self._v0 = [0.0] * len(spans)
        self._v1 = [0.0] * len(spans)
        self._grid_cell = -(1 << 62)
        self._offset = 0.0
        self._slope = 0.0

    def value(self, ms: int) -> float:
        """The noise at `ms`: one multiply-add while `ms` stays in the same 15 s cell."""
        cell = ms // GRID_MS
        if cell != self._grid_cell:
            start = cell * GRID_MS
            at_start = self._evaluate(start)
            self._slope = (self._evaluate(start + GRID_MS - 1) - at_start) / (GRID_MS - 1)
            self._offset = at_start
            self._grid_cell = cell
        return self._offset + self._slope * (ms - cell * GRID_MS)

    def sample(self, ms: int) -> float:
        """The noise at `ms`, evaluated directly: cheaper for scans that jump from cell to cell."""
        return self._evaluate(ms)

    def _evaluate(self, ms: int) -> float:
        total = 0.0
        cells, v0s, v1s, seed = self._cells, self._v0, self._v1, self._seed
        for level, span in enumerate(self._spans):
            cell = ms // span
            if cell != cells[level]:
                if cell == cells[level] + 1:
                    v0s[level] = v1s[level]
                else:
                    v0s[level] = signed_unit(seed, level, cell)
                v1s[level] = signed_unit(seed, level, cell + 1)
                cells[level] = cell
            v0 = v0s[level]
            fraction = (ms - cell * span) / span
            total += self._amplitudes[level] * (v0 + (v1s[level] - v0) * fraction)
        return total

    def partial(self, ms: int, first_level: int) -> float:
        """The contribution of the scales from `first_level` up, without touching the cache."""
        total = 0.0
        for level in range(first_level, len(self._spans)):
            span = self._spans[level]
            cell = ms // span
            v0 = signed_unit(self._seed, level, cell)
            v1 = signed_unit(self._seed, level, cell + 1)
            total += self._amplitudes[level] * (v0 + (v1 - v0) * ((ms - cell * span) / span))
        return total
