"""Upstox's REST endpoints the project uses: profile, market calendar and status, candles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from services.simulator import candles
from services.simulator.accounts import TokenRecord
from services.simulator.clock import (
    EXCHANGE_OF_SEGMENT,
    MS_PER_MINUTE,
    hours_of,
    ist_date,
    ist_ms,
)
from services.simulator.errors import (
    INTERNAL,
    INVALID_INPUT,
    INVALID_INSTRUMENT_KEY,
    TOO_MANY_REQUESTS,
    EnvelopeError,
)
from services.simulator.holidays import CLOSED_ON_TRADING_HOLIDAY, holidays_of_year
from services.simulator.state import require_user, state_of
from services.simulator.universe import Instrument

router = APIRouter()
Rows = list[list[object]]
User = Annotated[tuple[str, TokenRecord], Depends(require_user)]

# exchange -> the segment whose hours it keeps
EXCHANGE_SEGMENT: Final = {
    exchange: segment
    for segment, exchange in reversed(list(EXCHANGE_OF_SEGMENT.items()))
    if not segment.endswith("_INDEX")
}
EXCHANGES: Final = ("NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "MCX", "NSCOM")


def success(data: object) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


@router.get("/v2/user/profile")
async def profile(auth: User) -> JSONResponse:
    return success(auth[1].user.profile())


def _holiday_record(day: dt.date) -> list[dict[str, object]]:
    return [
        {
            "date": holiday.date.isoformat(),
            "description": holiday.description,
            "holiday_type": holiday.holiday_type,
            "closed_exchanges": list(CLOSED_ON_TRADING_HOLIDAY)
            if holiday.holiday_type == "TRADING_HOLIDAY"
            else [],
            "open_exchanges": [
                {
                    "exchange": "MCX",
                    "start_time": ist_ms(holiday.date, 17, 0),
                    "end_time": ist_ms(holiday.date, 23, 30),
                }
            ]
            if holiday.mcx_evening
            else [],
        }
        for holiday in holidays_of_year(day.year)
    ]


@router.get("/v2/market/holidays")
async def holidays(request: Request, auth: User) -> JSONResponse:
    return success(_holiday_record(ist_date(state_of(request).hub.market_now())))


@router.get("/v2/market/holidays/{date}")
async def holiday_on(date: str, auth: User) -> JSONResponse:
    day = candles.parse_date(date)
    return success([entry for entry in _holiday_record(day) if entry["date"] == day.isoformat()])


@router.get("/v2/market/timings/{date}")
async def timings(request: Request, date: str, auth: User) -> JSONResponse:
    day = candles.parse_date(date)
    clock = state_of(request).model.clock
    found = []
    for exchange in EXCHANGES:
        window = clock.session(EXCHANGE_SEGMENT[exchange], day)
        if window is not None:
            found.append({"exchange": exchange, "start_time": window[0], "end_time": window[1]})
    if not found and clock.kind == "ist" and day.weekday() < 5:
        found.append(
            {"exchange": "MCX", "start_time": ist_ms(day, 17, 0), "end_time": ist_ms(day, 23, 30)}
        )
    return success(found)


@router.get("/v2/market/status/{exchange}")
async def market_status(request: Request, exchange: str, auth: User) -> JSONResponse:
    name = exchange.upper()
    if name not in EXCHANGE_SEGMENT:
        choices = ", ".join(EXCHANGES)
        raise EnvelopeError(400, INVALID_INPUT, f"Invalid exchange: use one of {choices}")
    now = state_of(request).hub.market_now()
    clock = state_of(request).model.clock
    segment = EXCHANGE_SEGMENT[name]
    hours = hours_of(segment)
    today = ist_date(now)
    changes = [
        ist_ms(today) + minute * MS_PER_MINUTE
        for minute in (
            hours.pre_open_start,
            hours.pre_open_end,
            hours.open,
            hours.close,
            hours.closing_end,
        )
    ]
    last = max([at for at in changes if at <= now], default=ist_ms(today))
    return success(
        {
            "exchange": name,
            "status": clock.status(segment, now),
            "last_updated": ist_ms(today) if clock.kind == "open" else last,
        }
    )


def _instrument(request: Request, key: str) -> Instrument:
    instrument = state_of(request).model.instrument(key)
    if instrument is None:
        raise EnvelopeError(400, INVALID_INSTRUMENT_KEY, "Invalid Instrument key")
    return instrument


def _locked(request: Request, build: Callable[..., Rows], *args: object) -> Rows:
    sim = state_of(request)
    with sim.history_lock:
        return build(sim.history, *args)


async def _candle_request(request: Request) -> None:
    """Counted before the token is checked, so refused calls count too (`/admin/stats`); an
    admin fault (`/admin/candle-fault`) answers in Upstox's envelope, as its outages do."""
    sim = state_of(request)
    sim.candle_requests += 1
    status = sim.candle_fault
    if status is not None:
        code = INTERNAL if status >= 500 else TOO_MANY_REQUESTS if status == 429 else INVALID_INPUT
        raise EnvelopeError(status, code, "Something went wrong... please contact us")


# Route dependencies run before the handler's own (the bearer check among them).
CANDLES: Final = [Depends(_candle_request)]


@router.get(
    "/v3/historical-candle/intraday/{instrument_key}/{unit}/{interval}", dependencies=CANDLES
)
async def intraday_candles(
    request: Request, instrument_key: str, unit: str, interval: str, auth: User
) -> JSONResponse:
    instrument = _instrument(request, instrument_key)
    query = candles.parse_query(unit, interval, intraday=True)
    now = state_of(request).hub.market_now()
    rows = await run_in_threadpool(_locked, request, candles.intraday, instrument, query, now)
    return success({"candles": rows})


async def _historical(
    request: Request, key: str, unit: str, interval: str, to_date: str, from_date: str | None
) -> JSONResponse:
    instrument = _instrument(request, key)
    query = candles.parse_query(unit, interval)
    to_day = candles.parse_date(to_date)
    from_day = candles.check_range(
        query, to_day, candles.parse_date(from_date) if from_date is not None else None
    )
    now = state_of(request).hub.market_now()
    rows = await run_in_threadpool(
        _locked, request, candles.historical, instrument, query, from_day, to_day, now
    )
    return success({"candles": rows})


@router.get(
    "/v3/historical-candle/{instrument_key}/{unit}/{interval}/{to_date}/{from_date}",
    dependencies=CANDLES,
)
async def historical_candles(
    request: Request,
    instrument_key: str,
    unit: str,
    interval: str,
    to_date: str,
    from_date: str,
    auth: User,
) -> JSONResponse:
    return await _historical(request, instrument_key, unit, interval, to_date, from_date)


@router.get(
    "/v3/historical-candle/{instrument_key}/{unit}/{interval}/{to_date}", dependencies=CANDLES
)
async def historical_candles_to(
    request: Request, instrument_key: str, unit: str, interval: str, to_date: str, auth: User
) -> JSONResponse:
    return await _historical(request, instrument_key, unit, interval, to_date, None)
