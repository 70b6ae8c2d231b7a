"""The gateway's HTTP API: instruments, candles, holidays, status, health and metrics."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry

from services.gateway.history import (
    Failure,
    History,
    Part,
    Rows,
    chart_parts,
    merge_rows,
)
from services.gateway.hub import Hub
from services.gateway.instruments import CatalogueError, CatalogueSource
from shared import redis_contract as rc
from shared.instruments import is_instrument_key
from shared.ist import now_ist
from shared.metrics import metrics_response
from shared.redis_link import REDIS_ERRORS
from shared.sessions import SessionDecryptError, SessionStore
from shared.upstox.client import CANDLE_UNITS, UpstoxClient
from shared.upstox.errors import (
    UpstoxAuthError,
    UpstoxError,
    UpstoxRateLimited,
    UpstoxRequestError,
    UpstoxServerError,
)
from shared.upstox.models import Candle
from shared.viewer_guard import over_rate

logger = logging.getLogger(__name__)

router = APIRouter()

MAX_HISTORY_DAYS = 365


@dataclass
class ApiContext:
    """What the routes need, built by the app's lifespan."""

    hub: Hub
    upstox: UpstoxClient
    sessions: SessionStore
    catalogue: CatalogueSource
    registry: CollectorRegistry
    history: History


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


# ---- instruments --------------------------------------------------------------------------


@router.get("/api/instruments")
async def instruments(
    request: Request,
    q: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> Response:
    try:
        catalogue = await _context(request).catalogue.get()
    except CatalogueError as error:
        logger.error("%s", error)
        return _error(503, "instruments_unavailable", "the instrument list could not be loaded")
    found, matched = catalogue.search(q, limit)
    return JSONResponse({"instruments": found, "count": len(found), "matched": matched})


# ---- candles and holidays (Upstox REST with the logged-in user's token) ---------------------


async def _token(context: ApiContext) -> str | JSONResponse:
    try:
        found = await context.sessions.active_token()
    except REDIS_ERRORS:
        return _error(503, "redis_unavailable", "the session store (Redis) is unreachable")
    except SessionDecryptError as error:
        return _error(500, "session_unreadable", str(error))
    if found is None:
        return _error(
            401, "not_logged_in", "nobody is logged in with Upstox: log in to load this data"
        )
    return found[1]


def _upstox_error(error: UpstoxError) -> JSONResponse:
    """Upstox's failure as clear JSON. Messages come from Upstox's own error text (which the
    client already scrubs of secrets), never from our request."""
    detail = error.describe()
    if isinstance(error, UpstoxAuthError):
        return _error(
            401, "upstox_auth", f"Upstox refused the session's token; log in again ({detail})"
        )
    if isinstance(error, UpstoxRateLimited):
        return _error(429, "upstox_rate_limited", f"Upstox rate limit reached ({detail})")
    if isinstance(error, UpstoxRequestError):
        return _error(400, "upstox_refused", f"Upstox refused the request ({detail})")
    if isinstance(error, UpstoxServerError):
        return _error(502, "upstox_error", f"Upstox failed ({detail})")
    return _error(503, "upstox_unavailable", f"Upstox is unreachable ({detail})")


def _candle_rows(candles: list[Candle]) -> list[list[Any]]:
    ordered = sorted({c.ts: c for c in candles}.values(), key=lambda c: c.ts)
    return [[c.ts.isoformat(), c.open, c.high, c.low, c.close, c.volume, c.oi] for c in ordered]


@router.get("/api/history/{key}")
async def history(
    request: Request,
    key: Annotated[str, Path(max_length=100)],
    unit: str = "minutes",
    interval: Annotated[int, Query(ge=1, le=300)] = 1,
    days: Annotated[int, Query(ge=0, le=MAX_HISTORY_DAYS)] = 0,
) -> Response:
    """Candles for charts, oldest first: today's (intraday) and, with `days`, the days before;
    from the replicas' shared cache when another viewer asked lately (`history.py`)."""
    context = _context(request)
    refused = _over_history_rate(request, context)
    if refused is not None:
        return refused
    if not is_instrument_key(key):
        return _error(400, "bad_key", "malformed instrument key: expected SEGMENT|IDENTIFIER")
    unlisted = _unlisted(context, key)
    if unlisted is not None:
        return unlisted
    if unit not in CANDLE_UNITS:
        return _error(400, "bad_unit", f"unit must be one of {', '.join(CANDLE_UNITS)}")
    token = await _token(context)
    if isinstance(token, JSONResponse):
        return token
    today = now_ist().date()
    found: list[Rows] = []
    try:
        for part in chart_parts(key, unit, interval, days, today, context.history.intraday_ttl_ms):
            load = functools.partial(_load_part, context.upstox, token, part)
            answer = await context.history.cache.get(part, token, load)
            if answer is None:
                return _error(503, "history_busy", "Upstox is slow to answer: try again shortly")
            if isinstance(answer, Failure):
                return Response(answer.body, answer.status, media_type="application/json")
            found.append(answer)
    except REDIS_ERRORS:
        return _error(503, "redis_unavailable", "the history cache (Redis) is unreachable")
    return JSONResponse(
        {"key": key, "unit": unit, "interval": interval, "candles": merge_rows(found)}
    )


def _unlisted(context: ApiContext, key: str) -> JSONResponse | None:
    """Only catalogue keys reach Upstox, as only they reach the feed: an invented key would
    cost an Upstox call each time (the cache keeps answers for seconds)."""
    catalogue = context.catalogue.current
    if catalogue is None:
        return _error(503, "instruments_unavailable", "the instrument list is not loaded yet")
    if key not in catalogue.keys:
        return _error(404, "unknown_key", f"no such instrument: {key}")
    return None


def _over_history_rate(request: Request, context: ApiContext) -> JSONResponse | None:
    """429 once the caller has spent its `GATEWAY_HISTORY_PER_MINUTE` (cached answers count:
    this bounds a viewer, not Upstox)."""
    per_minute = context.hub.settings.gateway_history_per_minute
    message = f"over {per_minute} history requests a minute: try again later"
    refused = over_rate(context.history.viewers, request, message)
    if refused is not None:
        context.history.stats.rate_limited += 1
    return refused


async def _load_part(upstox: UpstoxClient, token: str, part: Part) -> Rows | Failure:
    """One Upstox call of a chart, as rows or as the error answer it becomes."""
    try:
        if part.first is None:
            candles = await upstox.intraday_candles(token, part.key, part.unit, part.interval)
        else:
            candles = await upstox.historical_candles(
                token, part.key, part.unit, part.interval, part.last or part.first, part.first
            )
    except UpstoxError as error:
        answer = _upstox_error(error)
        return Failure(answer.status_code, bytes(answer.body))
    return _candle_rows(candles)


@router.get("/api/holidays")
async def holidays(request: Request, date: dt.date | None = None) -> Response:
    """This year's market holidays (or one date's), from Upstox."""
    context = _context(request)
    token = await _token(context)
    if isinstance(token, JSONResponse):
        return token
    try:
        found = await context.upstox.holidays(token, date)
    except UpstoxError as error:
        return _upstox_error(error)
    return JSONResponse({"holidays": [h.model_dump(mode="json") for h in found]})


# ---- status, health, metrics ---------------------------------------------------------------


@router.get("/api/status")
async def status(request: Request) -> Response:
    hub = _context(request).hub
    ingestor: Any = None
    if hub.redis_up:
        try:
            raw = await hub.broker.redis.get(rc.INGESTOR_STATUS)
            ingestor = orjson.loads(raw) if raw else None
        except (*REDIS_ERRORS, orjson.JSONDecodeError):
            ingestor = None
    market: Any = None
    if hub.upstream.market_info is not None:
        try:
            market = orjson.loads(hub.upstream.market_info).get("marketInfo")
        except (orjson.JSONDecodeError, AttributeError):
            market = None
    stats = hub.snapshot_stats()
    return JSONResponse(
        {
            "replica": hub.replica_id,
            "redis": stats["redis"],
            "clients": stats["clients"],
            "channels": stats["channels"],
            "subscriptions": stats["subscriptions"],
            "ingestor": ingestor,
            "ingestorState": hub.upstream.ingestor_state,
            "marketInfo": market,
        }
    )


@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready when Redis answers and this replica's link to it is established, and until it
    starts draining (SIGTERM): a load balancer then sends new clients elsewhere."""
    hub = _context(request).hub
    if hub.drain.active:
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        await hub.broker.redis.ping()
    except REDIS_ERRORS:
        return JSONResponse({"status": "unavailable", "redis": "down"}, status_code=503)
    if not hub.redis_up:
        return JSONResponse({"status": "starting", "redis": "reconnecting"}, status_code=503)
    return JSONResponse({"status": "ready", "redis": "up"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return metrics_response(_context(request).registry)
