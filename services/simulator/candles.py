"""Historical and intraday candles (V3): parameter rules and generation from the price model.

Rules, as Upstox documents them: `minutes` 1..300 (range one month for 1-15, one quarter above;
from 2022), `hours` 1..5 (one quarter; from 2022), `days` 1 (one decade; from 2000), `weeks` 1
and `months` 1 (no limit; from 2000). Historical candles end the day before today (IST); today's
come from the intraday endpoint, whose last candle is still forming. Newest first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal

from services.simulator.clock import MS_PER_MINUTE, ist_date, ist_ms
from services.simulator.errors import INVALID_DATE_RANGE, INVALID_INPUT, EnvelopeError
from services.simulator.market import Candle, MarketModel
from services.simulator.universe import Instrument
from shared.ist import IST

Unit = Literal["minutes", "hours", "days", "weeks", "months"]
UNITS: Final = ("minutes", "hours", "days", "weeks", "months")
INTRADAY_UNITS: Final = ("minutes", "hours", "days")
MAX_INTERVAL: Final = {"minutes": 300, "hours": 5, "days": 1, "weeks": 1, "months": 1}
INTRADAY_FROM: Final = dt.date(2022, 1, 1)
DAILY_FROM: Final = dt.date(2000, 1, 1)


@dataclass(frozen=True)
class CandleQuery:
    unit: Unit
    interval: int

    @property
    def minutes(self) -> int:
        return self.interval * (60 if self.unit == "hours" else 1)


def parse_query(unit: str, interval: str, intraday: bool = False) -> CandleQuery:
    allowed = INTRADAY_UNITS if intraday else UNITS
    if unit not in allowed:
        raise EnvelopeError(400, INVALID_INPUT, f"Invalid unit: use one of {', '.join(allowed)}")
    if not interval.isdigit() or not 1 <= int(interval) <= MAX_INTERVAL[unit]:
        raise EnvelopeError(
            400, INVALID_INPUT, f"Invalid interval for {unit}: 1 to {MAX_INTERVAL[unit]}"
        )
    return CandleQuery(unit, int(interval))  # type: ignore[arg-type]


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str) -> dt.date:
    raise EnvelopeError(400, INVALID_INPUT, "Invalid date: use YYYY-MM-DD")


def _months_before(day: dt.date, months: int) -> dt.date:
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    for last in (31, 30, 29, 28):
        try:
            return dt.date(year, month + 1, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def earliest_from(query: CandleQuery, to_date: dt.date) -> dt.date | None:
    """The earliest from_date the unit's range limit allows (None: no limit)."""
    if query.unit == "minutes":
        return _months_before(to_date, 1 if query.interval <= 15 else 3)
    if query.unit == "hours":
        return _months_before(to_date, 3)
    if query.unit == "days":
        return _months_before(to_date, 120)
    return None


def check_range(query: CandleQuery, to_date: dt.date, from_date: dt.date | None) -> dt.date:
    """The from_date to use; UDAPI1148 when the range is backwards or over the limit."""
    earliest = earliest_from(query, to_date)
    if from_date is None:
        return earliest or DAILY_FROM
    if from_date > to_date:
        raise EnvelopeError(400, INVALID_DATE_RANGE, "Invalid date range: from_date after to_date")
    if earliest is not None and from_date < earliest:
        raise EnvelopeError(
            400, INVALID_DATE_RANGE, "Invalid date range: over the limit for this unit and interval"
        )
    return from_date


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, IST).isoformat()


def _row(candle: Candle) -> list[object]:
    return [
        iso(candle.ts),
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.oi,
    ]


def _intraday_candles(
    model: MarketModel, instrument: Instrument, query: CandleQuery, day: dt.date, until: int
) -> list[Candle]:
    window = model.clock.session(instrument.segment, day)
    if window is None or not model.is_listed(instrument, day):
        return []
    start, end = window
    end = min(end, until)
    length = query.minutes * MS_PER_MINUTE
    found = []
    begin = start
    while begin < end:
        found.append(model.candle(instrument, window, begin, min(begin + length, end)))
        begin += length
    return found


def _merge(candles: list[Candle], ts: int) -> Candle:
    return Candle(
        ts=ts,
        open=candles[0].open,
        high=max(c.high for c in candles),
        low=min(c.low for c in candles),
        close=candles[-1].close,
        volume=sum(c.volume for c in candles),
        oi=candles[-1].oi,
    )


def _period_start(day: dt.date, unit: str) -> dt.date:
    if unit == "weeks":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def historical(
    model: MarketModel,
    instrument: Instrument,
    query: CandleQuery,
    from_date: dt.date,
    to_date: dt.date,
    now_ms: int,
) -> list[list[object]]:
    """Candles over [from_date, to_date] (days before today only), newest first."""
    today = ist_date(now_ms)
    last = min(to_date, today - dt.timedelta(days=1))
    first = max(from_date, INTRADAY_FROM if query.unit in ("minutes", "hours") else DAILY_FROM)
    candles: list[Candle] = []
    day = first
    if query.unit in ("minutes", "hours"):
        while day <= last:
            candles.extend(_intraday_candles(model, instrument, query, day, 1 << 62))
            day += dt.timedelta(days=1)
    elif query.unit == "days":
        while day <= last:
            found = model.day_candle(instrument, day)
            if found is not None:
                candles.append(found)
            day += dt.timedelta(days=1)
    else:
        groups: dict[dt.date, list[Candle]] = {}
        while day <= last:
            found = model.day_candle(instrument, day)
            if found is not None:
                groups.setdefault(_period_start(day, query.unit), []).append(found)
            day += dt.timedelta(days=1)
        candles = [_merge(group, ist_ms(start)) for start, group in groups.items()]
    return [_row(candle) for candle in reversed(candles)]


def intraday(
    model: MarketModel, instrument: Instrument, query: CandleQuery, now_ms: int
) -> list[list[object]]:
    """Today's candles up to now, the last one still forming; newest first."""
    today = ist_date(now_ms)
    if query.unit == "days":
        minutes = _intraday_candles(model, instrument, CandleQuery("minutes", 300), today, now_ms)
        candles = [_merge(minutes, ist_ms(today))] if minutes else []
    else:
        candles = _intraday_candles(model, instrument, query, today, now_ms)
    return [_row(candle) for candle in reversed(candles)]
