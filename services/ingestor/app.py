"""The ingestor's HTTP side: health, readiness and metrics, with the ingestor run by lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from services.ingestor.service import Ingestor
from services.ingestor.settings import IngestorSettings
from shared.metrics import metrics_response


def create_app(settings: IngestorSettings) -> FastAPI:
    ingestor = Ingestor(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ingestor.start()
        try:
            yield
        finally:
            await ingestor.stop()

    app = FastAPI(
        title="tickstream ingestor",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ingestor = ingestor

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive: the process answers. Faults it recovers from by itself do not count."""
        return {"status": "ok", "instance": ingestor.instance, "state": ingestor.state}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: Redis reachable, and either active with the feed connected and not stalled,
        or a standby."""
        ready, why = ingestor.readiness()
        body = {
            "ready": ready,
            "reason": why,
            "instance": ingestor.instance,
            "active": ingestor.active,
            "state": ingestor.state,
            "redis": ingestor.redis_ok,
            "upstream": ingestor.upstream_connected,
            "stalled": ingestor.upstream.stalled,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response(ingestor.metrics)

    return app
