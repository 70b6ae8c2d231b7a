"""Jittered exponential backoff, shared by everything that retries Upstox (REST and feed).

The delay grows `initial`, `initial*factor`, ... up to `maximum`; each delay is then shortened by
a random fraction of at most `jitter` so that many clients failing together do not retry in
step. `reset()` after a success starts again from `initial`.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Pure state: `next_delay()` gives the next sleep in seconds; the caller does the sleeping."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempts = 0

    def peek_base(self) -> float:
        """The un-jittered delay the next call will start from."""
        # Capping the exponent keeps the power finite however long the outage lasts.
        exponent = min(self.attempts, 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))

    def next_delay(self) -> float:
        base = self.peek_base()
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0
