"""Faults on demand for tests and drills: enabled only when SIMULATOR_ADMIN_KEY is set, and
every request must carry it in the `X-Admin-Key` header.

| request | effect |
| --- | --- |
| `POST /admin/drop-connections?code=1011` | close every feed connection (WebSocket close code) |
| `POST /admin/expire-tokens?include_demo=true` | expire every token now, closing their feeds |
| `POST /admin/stall?seconds=N` | no data for N s on the feeds open now; new ones get data |
| `POST /admin/stall?seconds=N&scope=all` | no data for N s on every feed, new ones too |
| `POST /admin/malformed` | send one undecodable binary frame on every feed connection |
| `POST /admin/tick-interval?ms=N` | change the per-instrument tick period |
| `POST /admin/candle-fault?status=503` | every candle request answers `status` (0: cleared) |
| `GET /admin/stats` | connections, their subscriptions, frames sent, candle requests |

A stall withholds data frames (`initial_feed`, `live_feed`) while pings are answered and market
status changes still go out: Upstox's "connected but no data". The default silences the
connections open at that moment, each for its own N seconds, as a stall in the field does (a
reconnection gets data); `scope=all` is an upstream down altogether. `seconds=0` ends every stall.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.simulator.clock import now_ms
from services.simulator.errors import ADMIN_FORBIDDEN, INVALID_INPUT, EnvelopeError
from services.simulator.state import state_of

# never sent in a close frame (RFC 6455 section 7.4.1), or not allowed for servers
RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015, *range(1016, 3000)})


def require_admin(request: Request) -> None:
    configured = state_of(request).settings.simulator_admin_key
    given = request.headers.get("x-admin-key", "")
    if configured is None or not secrets.compare_digest(given, configured.get_secret_value()):
        raise EnvelopeError(403, ADMIN_FORBIDDEN, "admin API disabled or wrong X-Admin-Key")


router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


def done(**data: object) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


@router.post("/drop-connections")
async def drop_connections(
    request: Request, code: Annotated[int, Query(ge=1000, le=4999)] = 1011
) -> JSONResponse:
    if code in RESERVED_CLOSE_CODES:
        raise EnvelopeError(400, INVALID_INPUT, "close code reserved by RFC 6455")
    return done(dropped=state_of(request).hub.drop_all(code, "dropped by admin"))


@router.post("/expire-tokens")
async def expire_tokens(request: Request, include_demo: bool = True) -> JSONResponse:
    sim = state_of(request)
    expired = sim.tokens.expire_all(now_ms(), include_demo=include_demo)
    closed = sim.hub.close_for_invalid_tokens()
    return done(expired=expired, closed_connections=closed)


@router.post("/stall")
async def stall(
    request: Request,
    seconds: Annotated[float, Query(ge=0, le=3600)],
    scope: Literal["current", "all"] = "current",
) -> JSONResponse:
    silenced = state_of(request).hub.stall(seconds, everything=scope == "all")
    return done(stalled_seconds=seconds, scope=scope, connections=silenced)


@router.post("/malformed")
async def malformed(request: Request) -> JSONResponse:
    return done(connections=state_of(request).hub.send_malformed())


@router.post("/tick-interval")
async def tick_interval(
    request: Request, ms: Annotated[float, Query(gt=0, le=60_000)]
) -> JSONResponse:
    state_of(request).hub.set_tick_interval(ms)
    return done(tick_interval_ms=ms)


@router.post("/candle-fault")
async def candle_fault(
    request: Request, status: Annotated[int, Query(ge=0, le=599)]
) -> JSONResponse:
    if status and status < 400:
        raise EnvelopeError(400, INVALID_INPUT, "a fault is a 4xx or 5xx status, or 0 to clear")
    state_of(request).candle_fault = status or None
    return done(candle_fault=status)


@router.get("/stats")
async def stats(request: Request) -> JSONResponse:
    sim = state_of(request)
    return done(**sim.hub.stats(), candle_requests=sim.candle_requests)
