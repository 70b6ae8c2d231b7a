"""The recorder's HTTP side: health, readiness, status and metrics, with the recorder run by
lifespan, and the recording's query API (`services.recorder.api`) behind the viewer guard the
gateway uses, so a deployment in token mode does not leave the recording open to anyone.

The guard answers JSON only (the recorder has no page to sign in on); the dashboard's sign-in
cookie (Path=/) reaches it through the same edge, so the dashboard's calls work in token mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from services.recorder.api import router
from services.recorder.service import Recorder
from services.recorder.settings import RecorderSettings
from shared.metrics import metrics_response
from shared.token_bucket import BucketTable
from shared.viewer_access import ViewerAccess
from shared.viewer_guard import ViewerGuard

KEYED_API_PREFIXES: Final = ("/api/ticks/", "/api/candles/")  # the rest of the path is the key


def create_app(settings: RecorderSettings) -> FastAPI:
    recorder = Recorder(settings)
    viewers = ViewerAccess(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await recorder.start()
        try:
            yield
        finally:
            await viewers.aclose()
            await recorder.stop()

    app = FastAPI(
        title="tickstream recorder",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.recorder = recorder
    app.state.recording_root = settings.recorder_dir  # read by the query API
    app.state.query_limits = BucketTable(settings.recorder_queries_per_minute)
    app.include_router(router)
    app.add_middleware(ViewerGuard, access=viewers, keyed_prefixes=KEYED_API_PREFIXES)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the process answers. Disk and Redis faults it recovers from do not count."""
        return {"status": "ok", "instance": recorder.instance, "state": recorder.state}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: Redis reachable and the recording writable."""
        ready, why = recorder.readiness()
        body = {"ready": ready, "reason": why, "instance": recorder.instance}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/status")
    async def status() -> JSONResponse:
        return JSONResponse(recorder.status().model_dump())

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response(recorder.metrics)

    return app
