"""Pure decisions of a feed: the reconnect delay and, per key, whether a value is news."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["SequenceTracker", "Verdict", "backoff_delay"]


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before reconnect attempt `attempt` (0-based): "equal jitter" in [c/2, c) with
    c = min(cap, base * 2**attempt), so a crowd of clients does not come back in step."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    gap: int = 0  # updates superseded before this one (conflation: not loss)
    new_epoch: bool = False  # continuity lost upstream
    resync: bool = False  # ask the gateway for a snapshot of the key


class SequenceTracker:
    """The last (epoch, seq) seen per key. An initial feed is always taken (a snapshot). A live
    value in a new epoch is taken and asks for a snapshot; one not above the last seq is a repeat
    or out of order: dropped (going backwards also asks for a snapshot)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._last.pop(key, None)

    def check(self, key: str, seq: int | None, epoch: str | None, initial: bool) -> Verdict:
        prev = self._last.get(key)
        if initial or prev is None or seq is None or epoch is None:
            if seq is not None and epoch is not None:
                self._last[key] = (epoch, seq)
            return Verdict(True)
        if epoch != prev[0]:
            self._last[key] = (epoch, seq)
            return Verdict(True, new_epoch=True, resync=True)
        if seq <= prev[1]:
            return Verdict(False, resync=seq < prev[1])
        self._last[key] = (epoch, seq)
        return Verdict(True, gap=seq - prev[1] - 1)
