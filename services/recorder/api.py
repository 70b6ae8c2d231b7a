"""The recording's HTTP queries: `GET /api/ticks/{key}` and `GET /api/candles/{key}`, as a router
any app includes. It reads the recording's root from `request.app.state.recording_root` (the
recorder's app sets it) and runs each query in a thread (`query.py`: DuckDB blocks).

Answers have the shape of the gateway's `/api/history` so that the dashboard reads both alike:
`{"key", "interval", "candles": [[ts, o, h, l, c, volume, oi], ...]}` or
`{"key", "ticks": [...], "truncated"}`; `GET /api/recording/gaps` answers `{"gaps": [...]}`
(what the recording is missing, so that a gap is reported, never hidden); errors are
`{"error": code, "message": text}`. Bounds keep one request from reading a recording's whole
history or building a huge answer: a span of at most `MAX_SPAN` and at most `MAX_TICKS` ticks.
A viewer (its token's subject, else its address) may make so many queries a minute
(`request.app.state.query_limits`, a `BucketTable`; none: no limit), since each one reads
files: beyond, 429 `rate_limited` with Retry-After.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path as FilePath
from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from services.recorder import query
from shared.instruments import is_instrument_key
from shared.ist import IST, now_ist
from shared.token_bucket import BucketTable
from shared.viewer_guard import over_rate

__all__ = ["MAX_SPAN", "MAX_TICKS", "TimeError", "parse_time", "router"]

GAPS_SPAN: Final = dt.timedelta(days=7)  # the default for gaps: the last week

logger = logging.getLogger(__name__)

MAX_SPAN: Final = dt.timedelta(days=31)
MAX_TICKS: Final = 100_000
TICKS_SPAN: Final = dt.timedelta(hours=1)  # the default for ticks: the last hour

router = APIRouter()


class TimeError(ValueError):
    """A time that is neither ISO 8601 nor epoch milliseconds, or a range out of bounds."""


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (a date or a time without an offset is IST) or epoch milliseconds."""
    text = text.strip()
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeError(
            f"bad time {text!r}: expected ISO 8601 (e.g. 2026-12-04T09:15:00+05:30) or epoch ms"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=IST)


def time_range(
    start: str | None, end: str | None, default_span: dt.timedelta | None
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) from the query's texts: `end` defaults to now, `start` to `default_span`
    before it (None: today's IST midnight). `TimeError` for bad or too wide ranges."""
    until = parse_time(end) if end else now_ist()
    if start:
        since = parse_time(start)
    elif default_span is not None:
        since = until - default_span
    else:
        since = dt.datetime.combine(until.astimezone(IST).date(), dt.time(), IST)
    if since >= until:
        raise TimeError("'from' must be before 'to'")
    if until - since > MAX_SPAN:
        raise TimeError(f"the range spans more than {MAX_SPAN.days} days: ask for less")
    return since, until


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _over_rate(request: Request) -> JSONResponse | None:
    limits: BucketTable | None = getattr(request.app.state, "query_limits", None)
    if limits is None:
        return None
    return over_rate(limits, request, "too many recording queries a minute: try again later")


Prepared = tuple[FilePath | str, dt.datetime, dt.datetime]


def _prepare(
    request: Request,
    start: str | None,
    end: str | None,
    default_span: dt.timedelta | None,
    key: str | None = None,
) -> Prepared | JSONResponse:
    """What every query checks first, in order: the caller's rate, the key (when the route
    names one), the time range, and that there is a recording: (root, since, until), or the
    refusal to answer with."""
    if (refused := _over_rate(request)) is not None:
        return refused
    if key is not None and not is_instrument_key(key):
        return _error(400, "bad_key", "malformed instrument key: expected SEGMENT|IDENTIFIER")
    try:
        since, until = time_range(start, end, default_span)
    except TimeError as error:
        return _error(400, "bad_time", str(error))
    root: FilePath | str | None = getattr(request.app.state, "recording_root", None)
    if root is None:
        return _error(503, "no_recording", "this server has no recording")
    return root, since, until


@router.get("/api/ticks/{key}")
async def recorded_ticks(
    request: Request,
    key: Annotated[str, Path(max_length=100)],
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    limit: int = 10_000,
) -> Response:
    """The recorded ticks of `key` in [from, to) (default: the last hour), oldest first."""
    prepared = _prepare(request, start, end, TICKS_SPAN, key)
    if isinstance(prepared, JSONResponse):
        return prepared
    if not 1 <= limit <= MAX_TICKS:
        return _error(400, "bad_limit", f"limit must be 1 to {MAX_TICKS}")
    root, since, until = prepared
    # One more than asked, to tell a cut answer from a complete one.
    found = await asyncio.to_thread(query.ticks, root, key, since, until, limit + 1)
    return JSONResponse(
        {"key": key, "ticks": found[:limit], "truncated": len(found) > limit},
    )


@router.get("/api/candles/{key}")
async def recorded_candles(
    request: Request,
    key: Annotated[str, Path(max_length=100)],
    interval: Annotated[str, Query(max_length=10)] = "1m",
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> Response:
    """Candles of `key` built from its recorded ticks in [from, to) (default: today, IST)."""
    prepared = _prepare(request, start, end, None, key)
    if isinstance(prepared, JSONResponse):
        return prepared
    try:
        query.parse_interval(interval)
    except ValueError as error:
        return _error(400, "bad_interval", str(error))
    root, since, until = prepared
    found = await asyncio.to_thread(query.candles, root, key, interval, since, until)
    return JSONResponse({"key": key, "interval": interval, "candles": found})


@router.get("/api/recording/gaps")
async def recording_gaps(
    request: Request,
    start: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> Response:
    """Frames missing from the recording in [from, to) (default: the last week): each gap with
    the instance whose frames are missing, how many, and the received times around it."""
    prepared = _prepare(request, start, end, GAPS_SPAN)
    if isinstance(prepared, JSONResponse):
        return prepared
    root, since, until = prepared
    found = await asyncio.to_thread(query.gaps, root, since, until)
    return JSONResponse({"gaps": found})
