"""India Standard Time helpers. IST is UTC+05:30 all year (no daylight saving)."""

from __future__ import annotations

import datetime as dt
from typing import Final

__all__ = ["IST", "TOKEN_EXPIRY_TIME", "format_ist", "next_token_expiry", "now_ist"]

IST: Final = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")

# Upstox access tokens stop working at 03:30 IST, whatever time they were issued.
TOKEN_EXPIRY_TIME: Final = dt.time(3, 30)


def now_ist() -> dt.datetime:
    return dt.datetime.now(IST)


def next_token_expiry(issued_at: dt.datetime) -> dt.datetime:
    """The first 03:30 IST strictly after `issued_at` (an aware datetime), as an IST datetime.

    Issued 02:30 IST -> 03:30 the same day; issued 03:30 or later -> 03:30 the next day.
    """
    if issued_at.tzinfo is None or issued_at.utcoffset() is None:
        raise ValueError("issued_at must be timezone-aware")
    local = issued_at.astimezone(IST)
    expiry = dt.datetime.combine(local.date(), TOKEN_EXPIRY_TIME, tzinfo=IST)
    if local >= expiry:
        expiry += dt.timedelta(days=1)
    return expiry


def format_ist(moment: dt.datetime | float) -> str:
    """ISO-8601 with the +05:30 offset; a number is taken as epoch seconds."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.fromtimestamp(moment, tz=IST)
    return moment.astimezone(IST).isoformat()
