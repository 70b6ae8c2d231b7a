"""Upstox's per-user request limits: sliding windows of one second, one minute and 30 minutes."""

from __future__ import annotations

from collections import deque
from typing import Final

WINDOWS_MS: Final = (1_000, 60_000, 1_800_000)


class RateLimiter:
    """`allow(user, now)` records and admits a request, or refuses it without recording it."""

    def __init__(self, per_second: int, per_minute: int, per_30_minutes: int) -> None:
        self._limits = (per_second, per_minute, per_30_minutes)
        self._history: dict[str, tuple[deque[int], deque[int], deque[int]]] = {}

    def allow(self, user_id: str, now_ms: int) -> bool:
        history = self._history.get(user_id)
        if history is None:
            history = (deque(), deque(), deque())
            self._history[user_id] = history
        for window, limit, times in zip(WINDOWS_MS, self._limits, history, strict=True):
            while times and times[0] <= now_ms - window:
                times.popleft()
            if len(times) >= limit:
                return False
        for times in history:
            times.append(now_ms)
        return True
