"""The simulator's ASGI app: login, REST, the V3 feed and the admin API on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.simulator import admin, feed_routes, login, rest
from services.simulator.errors import (
    INTERNAL,
    INVALID_INPUT,
    NOT_SUPPORTED,
    EnvelopeError,
    error_response,
)
from services.simulator.settings import SimulatorSettings
from services.simulator.state import build_state

logger = logging.getLogger(__name__)


def create_app(settings: SimulatorSettings) -> FastAPI:
    state = build_state(settings)
    feed_routes.install_log_filter()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop_task = asyncio.create_task(state.hub.run(), name="simulator-feed-loop")
        try:
            yield
        finally:
            state.hub.drop_all(1001, "simulator shutting down")
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task

    app = FastAPI(
        title="tickstream Upstox simulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.simulator = state
    app.include_router(login.router)
    app.include_router(feed_routes.router)
    app.include_router(rest.router)
    if settings.simulator_admin_key is not None:
        app.include_router(admin.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(EnvelopeError)
    async def envelope_error(request: Request, error: EnvelopeError) -> JSONResponse:
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, INVALID_INPUT, "Invalid Input")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code in (404, 405):
            return error_response(
                error.status_code, NOT_SUPPORTED, "This request is not supported by Upstox API"
            )
        return error_response(error.status_code, INVALID_INPUT, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return error_response(500, INTERNAL, "Something went wrong... please contact us")

    return app
