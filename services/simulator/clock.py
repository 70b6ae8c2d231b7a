"""Indian market time: IST, token expiry at 03:30 IST, sessions and market status per segment.

Pure functions of a timestamp; the market clock is either always `open` (the demo default) or
follows exchange hours in IST (`ist`), skipping weekends and the holidays in `holidays.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal

from services.simulator.holidays import is_trading_holiday
from shared.instruments import SEGMENTS
from shared.ist import IST

ClockKind = Literal["open", "ist"]

MS_PER_MINUTE: Final = 60_000
MS_PER_DAY: Final = 86_400_000
IST_OFFSET_MS: Final = 19_800_000


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def ist_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, IST)


def ist_date(ms: int) -> dt.date:
    return dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + (ms + IST_OFFSET_MS) // MS_PER_DAY)


def ist_ms(day: dt.date, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of `hour:minute` IST on `day`."""
    days = day.toordinal() - dt.date(1970, 1, 1).toordinal()
    return days * MS_PER_DAY + (hour * 60 + minute) * MS_PER_MINUTE - IST_OFFSET_MS


def token_expiry_ms(issued_ms: int) -> int:
    """Upstox tokens live until the next 03:30 IST (issued before 03:30: the same day's)."""
    day = ist_date(issued_ms)
    expiry = ist_ms(day, 3, 30)
    if issued_ms >= expiry:
        expiry = ist_ms(day + dt.timedelta(days=1), 3, 30)
    return expiry


@dataclass(frozen=True)
class Hours:
    """Trading hours of a segment, minutes after IST midnight."""

    pre_open_start: int
    pre_open_end: int
    open: int
    close: int
    closing_end: int


_EQUITY: Final = Hours(9 * 60, 9 * 60 + 8, 9 * 60 + 15, 15 * 60 + 30, 15 * 60 + 40)
_FNO: Final = Hours(9 * 60 + 15, 9 * 60 + 15, 9 * 60 + 15, 15 * 60 + 30, 15 * 60 + 30)
_CURRENCY: Final = Hours(9 * 60, 9 * 60, 9 * 60, 17 * 60, 17 * 60)
_COMMODITY: Final = Hours(9 * 60, 9 * 60, 9 * 60, 23 * 60 + 30, 23 * 60 + 30)

SEGMENT_HOURS: Final[dict[str, Hours]] = {
    "NSE_EQ": _EQUITY,
    "BSE_EQ": _EQUITY,
    "NSE_INDEX": _EQUITY,
    "BSE_INDEX": _EQUITY,
    "NSE_FO": _FNO,
    "BSE_FO": _FNO,
    "NCD_FO": _CURRENCY,
    "BCD_FO": _CURRENCY,
    "NSE_COM": _COMMODITY,
    "MCX_FO": _COMMODITY,
    "MCX_INDEX": _COMMODITY,
}

EXCHANGE_OF_SEGMENT: Final = {
    "NSE_EQ": "NSE",
    "NSE_INDEX": "NSE",
    "NSE_FO": "NFO",
    "NCD_FO": "CDS",
    "NSE_COM": "NSCOM",
    "BSE_EQ": "BSE",
    "BSE_INDEX": "BSE",
    "BSE_FO": "BFO",
    "BCD_FO": "BCD",
    "MCX_FO": "MCX",
    "MCX_INDEX": "MCX",
}


def hours_of(segment: str) -> Hours:
    return SEGMENT_HOURS.get(segment, _EQUITY)


# MarketStatus enum names of the feed, by phase.
PRE_OPEN_START: Final = "PRE_OPEN_START"
PRE_OPEN_END: Final = "PRE_OPEN_END"
NORMAL_OPEN: Final = "NORMAL_OPEN"
NORMAL_CLOSE: Final = "NORMAL_CLOSE"
CLOSING_START: Final = "CLOSING_START"
CLOSING_END: Final = "CLOSING_END"


class MarketClock:
    """Which days trade and when each segment's session runs, for one clock kind."""

    def __init__(self, kind: ClockKind) -> None:
        self.kind = kind

    def is_trading_day(self, day: dt.date) -> bool:
        if self.kind == "open":
            return True
        return day.weekday() < 5 and not is_trading_holiday(day)

    def session(self, segment: str, day: dt.date) -> tuple[int, int] | None:
        """(start_ms, end_ms) of the continuous session of `segment` on `day`, or None."""
        if not self.is_trading_day(day):
            return None
        if self.kind == "open":
            return ist_ms(day), ist_ms(day + dt.timedelta(days=1))
        hours = hours_of(segment)
        return ist_ms(day) + hours.open * MS_PER_MINUTE, ist_ms(day) + hours.close * MS_PER_MINUTE

    def previous_trading_day(self, day: dt.date) -> dt.date:
        day -= dt.timedelta(days=1)
        while not self.is_trading_day(day):
            day -= dt.timedelta(days=1)
        return day

    def is_open(self, segment: str, ms: int) -> bool:
        window = self.session(segment, ist_date(ms))
        return window is not None and window[0] <= ms < window[1]

    def status(self, segment: str, ms: int) -> str:
        """The feed's MarketStatus name for `segment` at `ms`."""
        if self.kind == "open":
            return NORMAL_OPEN
        day = ist_date(ms)
        if not self.is_trading_day(day):
            return NORMAL_CLOSE
        minute = (ms - ist_ms(day)) // MS_PER_MINUTE
        hours = hours_of(segment)
        if hours.pre_open_start <= minute < hours.pre_open_end:
            return PRE_OPEN_START
        if hours.pre_open_end <= minute < hours.open:
            return PRE_OPEN_END
        if hours.open <= minute < hours.close:
            return NORMAL_OPEN
        if hours.close <= minute < hours.closing_end:
            return CLOSING_START
        if hours.closing_end <= minute < hours.closing_end + 20:
            return CLOSING_END
        return NORMAL_CLOSE

    def statuses(self, ms: int) -> dict[str, str]:
        return {segment: self.status(segment, ms) for segment in SEGMENTS}
