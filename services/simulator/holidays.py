"""The exchange holiday calendar the simulator publishes (`/v2/market/holidays`).

A built-in list of NSE trading and settlement holidays for 2025-2027; other years get the fixed
national holidays only. MCX keeps its evening session on most trading holidays, as in reality.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Final, Literal

HolidayType = Literal["TRADING_HOLIDAY", "SETTLEMENT_HOLIDAY"]

CLOSED_ON_TRADING_HOLIDAY: Final = ("NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "NSCOM")


@dataclass(frozen=True)
class Holiday:
    date: dt.date
    description: str
    holiday_type: HolidayType
    mcx_evening: bool = True  # MCX trades 17:00-23:30 IST on most exchange holidays


_TABLE: Final[dict[int, tuple[tuple[str, str, HolidayType], ...]]] = {
    2025: (
        ("02-26", "Mahashivratri", "TRADING_HOLIDAY"),
        ("03-14", "Holi", "TRADING_HOLIDAY"),
        ("03-31", "Id-Ul-Fitr (Ramadan Eid)", "TRADING_HOLIDAY"),
        ("04-10", "Shri Mahavir Jayanti", "TRADING_HOLIDAY"),
        ("04-14", "Dr. Baba Saheb Ambedkar Jayanti", "TRADING_HOLIDAY"),
        ("04-18", "Good Friday", "TRADING_HOLIDAY"),
        ("05-01", "Maharashtra Day", "TRADING_HOLIDAY"),
        ("08-15", "Independence Day", "TRADING_HOLIDAY"),
        ("08-27", "Ganesh Chaturthi", "TRADING_HOLIDAY"),
        ("10-02", "Mahatma Gandhi Jayanti/Dussehra", "TRADING_HOLIDAY"),
        ("10-21", "Diwali Laxmi Pujan", "TRADING_HOLIDAY"),
        ("10-22", "Diwali-Balipratipada", "TRADING_HOLIDAY"),
        ("11-05", "Prakash Gurpurb Sri Guru Nanak Dev", "TRADING_HOLIDAY"),
        ("12-25", "Christmas", "TRADING_HOLIDAY"),
    ),
    2026: (
        ("01-26", "Republic Day", "TRADING_HOLIDAY"),
        ("03-03", "Holi", "TRADING_HOLIDAY"),
        ("03-26", "Shri Ram Navami", "TRADING_HOLIDAY"),
        ("03-31", "Shri Mahavir Jayanti", "TRADING_HOLIDAY"),
        ("04-03", "Good Friday", "TRADING_HOLIDAY"),
        ("04-14", "Dr. Baba Saheb Ambedkar Jayanti", "TRADING_HOLIDAY"),
        ("05-01", "Maharashtra Day", "TRADING_HOLIDAY"),
        ("05-28", "Bakri Id", "TRADING_HOLIDAY"),
        ("06-26", "Muharram", "TRADING_HOLIDAY"),
        ("09-14", "Ganesh Chaturthi", "TRADING_HOLIDAY"),
        ("10-02", "Mahatma Gandhi Jayanti", "TRADING_HOLIDAY"),
        ("10-20", "Dussehra", "TRADING_HOLIDAY"),
        ("11-10", "Diwali-Balipratipada", "TRADING_HOLIDAY"),
        ("11-24", "Prakash Gurpurb Sri Guru Nanak Dev", "TRADING_HOLIDAY"),
        ("12-25", "Christmas", "TRADING_HOLIDAY"),
        ("02-19", "Chhatrapati Shivaji Maharaj Jayanti", "SETTLEMENT_HOLIDAY"),
    ),
    2027: (
        ("01-26", "Republic Day", "TRADING_HOLIDAY"),
        ("03-22", "Holi", "TRADING_HOLIDAY"),
        ("03-26", "Good Friday", "TRADING_HOLIDAY"),
        ("04-14", "Dr. Baba Saheb Ambedkar Jayanti", "TRADING_HOLIDAY"),
        ("05-01", "Maharashtra Day", "TRADING_HOLIDAY"),
        ("08-16", "Parsi New Year", "TRADING_HOLIDAY"),
        ("10-29", "Diwali-Balipratipada", "TRADING_HOLIDAY"),
        ("12-25", "Christmas", "TRADING_HOLIDAY"),
    ),
}

_FIXED: Final[tuple[tuple[str, str, HolidayType], ...]] = (
    ("01-26", "Republic Day", "TRADING_HOLIDAY"),
    ("05-01", "Maharashtra Day", "TRADING_HOLIDAY"),
    ("08-15", "Independence Day", "TRADING_HOLIDAY"),
    ("10-02", "Mahatma Gandhi Jayanti", "TRADING_HOLIDAY"),
    ("12-25", "Christmas", "TRADING_HOLIDAY"),
)

# National holidays on which MCX stays shut all day.
_MCX_CLOSED: Final = {"Republic Day", "Independence Day", "Mahatma Gandhi Jayanti", "Christmas"}


@cache
def holidays_of_year(year: int) -> tuple[Holiday, ...]:
    rows = _TABLE.get(year, _FIXED)
    found = [
        Holiday(
            date=dt.date.fromisoformat(f"{year}-{month_day}"),
            description=description,
            holiday_type=kind,
            mcx_evening=description not in _MCX_CLOSED and kind == "TRADING_HOLIDAY",
        )
        for month_day, description, kind in rows
        if dt.date.fromisoformat(f"{year}-{month_day}").weekday() < 5
    ]
    return tuple(sorted(found, key=lambda holiday: holiday.date))


def holiday_on(day: dt.date) -> Holiday | None:
    for holiday in holidays_of_year(day.year):
        if holiday.date == day:
            return holiday
    return None


def is_trading_holiday(day: dt.date) -> bool:
    holiday = holiday_on(day)
    return holiday is not None and holiday.holiday_type == "TRADING_HOLIDAY"
