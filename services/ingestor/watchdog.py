"""The upstream stall watchdog's policy: pure, from what the session has seen to what it does.

A feed can stay connected, answer every ping and send nothing: the "connected but no data" stall
reported across Indian broker feeds. The watchdog calls it a stall only when data is certainly
due: something is subscribed, the segment of at least one subscribed key is open per the latest
`market_info`, and no data frame has arrived for the silence limit while that held. So a closed
market, a weekend or a connection with nothing subscribed is never a stall, and the silence of a
segment that has just opened is counted from its opening, not from the last tick of yesterday.

Open means `NORMAL_OPEN` only: that is the continuous session, when every liquid instrument
trades many times a second. In the pre-open (`PRE_OPEN_START`, `PRE_OPEN_END`) and the closing
session (`CLOSING_START`) trading is an order-collection call auction or a trickle at one closing
price, and a quiet feed is normal; everything else is closed.

The remedy, one step per silence limit: resubscribe once (`unsub` then `sub` of what is
subscribed; Upstox answers a `sub` with an `initial_feed` snapshot, so a connection that works
answers at once), then reconnect through a fresh authorize, and keep reconnecting each limit
(the connection loop's backoff spaces the attempts) until data arrives: a fresh connection's
own `sub` is as good a resubscription as any. Only a data frame (`initial_feed`, `live_feed`)
counts as the feed talking: every fresh connection opens with a `market_info`, and a stalled
one may still report status changes.

`StallWatch` owns that state: when the last frame came, since when data has been due, what was
done in this silence, and the subscribed segments and segment statuses (parsed once per change).
It must NOT do I/O, count, log or read a clock: the upstream session passes the time in and acts
on the verdicts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Literal

import orjson

from services.ingestor.subscriptions import Request, diff_requests
from shared.instruments import Mode

__all__ = [
    "ACTIONS",
    "OPEN_STATUSES",
    "Action",
    "StallWatch",
    "data_due",
    "decide",
    "resubscribe_requests",
    "segment_statuses",
    "segments_of",
]

Action = Literal["resubscribe", "reconnect"]
ACTIONS: tuple[Action, ...] = ("resubscribe", "reconnect")

OPEN_STATUSES: frozenset[str] = frozenset({"NORMAL_OPEN"})


def segment_statuses(market_info: bytes | None) -> dict[str, str]:
    """Segment -> `MarketStatus` name, from a `market_info` frame as the processor renders it
    (`{"marketInfo": {"segmentStatus": {...}}}`); empty when absent or unreadable."""
    if market_info is None:
        return {}
    try:
        statuses = orjson.loads(market_info)["marketInfo"]["segmentStatus"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    if not isinstance(statuses, dict):
        return {}
    return {str(segment): str(status) for segment, status in statuses.items()}


def segments_of(keys: Iterable[str]) -> frozenset[str]:
    """The segments of instrument keys (`NSE_EQ|INE002A01018` -> `NSE_EQ`)."""
    return frozenset(key.partition("|")[0] for key in keys)


def data_due(segments: Collection[str], statuses: Mapping[str, str]) -> bool:
    """Must data flow? Something is subscribed in a segment that is open. A segment missing from
    the statuses is not known to be open."""
    return any(statuses.get(segment) in OPEN_STATUSES for segment in segments)


def decide(silent_for: float, limit: float, done: Action | None) -> Action | None:
    """What to do after `silent_for` seconds without data while it was due (since the last
    step, if one was taken), given what was already done in this silence."""
    if silent_for < limit:
        return None
    return "resubscribe" if done is None else "reconnect"


def resubscribe_requests(subscribed: Mapping[str, Mode], batch_size: int) -> list[Request]:
    """`unsub` of everything subscribed, then `sub` of it again in its modes."""
    return diff_requests(subscribed, {}, batch_size) + diff_requests({}, subscribed, batch_size)


class StallWatch:
    """The watchdog's memory across checks and connections. Times are `time.monotonic()`.

    `opened(now)` on each new connection, `heard(now)` on each data frame, `check(...)` now and then
    while connected; a standby starts again with a new one.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.done: Action | None = None  # the last step taken in this silence; None: no stall
        self.stall_began = 0.0  # the start of the silence that became a stall
        self.steps: dict[Action, int] = dict.fromkeys(ACTIONS, 0)  # taken in this stall
        self._last_frame = 0.0
        self._quiet_since = 0.0  # the silence is counted from here at the earliest
        self._due = False
        self._keys: object = None
        self._segments: frozenset[str] = frozenset()
        self._market_info: bytes | None = None
        self._statuses: dict[str, str] = {}

    @property
    def stalled(self) -> bool:
        return self.done is not None

    def opened(self, now: float) -> None:
        """A new connection: its silence counts from now. A stall goes on until data comes."""
        self._quiet_since = now

    def heard(self, now: float) -> float | None:
        """A data frame arrived. Returns how long the feed was silent if that ends a stall."""
        self._last_frame = now
        if self.done is None:
            return None
        self.done = None
        return now - self.stall_began

    def check(
        self, now: float, subscribed: Mapping[str, Mode], market_info: bytes | None
    ) -> Action | None:
        """The step to take now, if any. `subscribed` is what is subscribed upstream and
        `market_info` the latest frame of that type (both re-read only when they change).
        Data no longer due (the market closed, nothing subscribed) ends a stall."""
        if subscribed is not self._keys:
            self._keys, self._segments = subscribed, segments_of(subscribed)
        if market_info is not self._market_info:
            self._market_info, self._statuses = market_info, segment_statuses(market_info)
        if not data_due(self._segments, self._statuses):
            self._due = False
            self.done = None
            return None
        if not self._due:
            self._due = True
            self._quiet_since = max(self._quiet_since, now)
        quiet = max(self._last_frame, self._quiet_since)
        action = decide(now - quiet, self.limit, self.done)
        if action is not None:
            if self.done is None:
                self.stall_began = quiet
                self.steps = dict.fromkeys(ACTIONS, 0)
            self.done = action
            self.steps[action] += 1
            self._quiet_since = now  # the step gets a whole limit to bear fruit
        return action

    def open_segments(self) -> list[str]:
        """The subscribed segments that are open (for the log)."""
        return sorted(s for s in self._segments if self._statuses.get(s) in OPEN_STATUSES)
