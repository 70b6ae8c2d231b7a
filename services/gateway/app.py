"""The gateway app: FastAPI for HTTP, `GatewayConnection` for the WebSocket at `/ws`.

Run it with `server_options()` passed to uvicorn (the CLI does): uvicorn hands WebSocket
upgrades to `GatewayConnection`, which finds the hub in the lifespan state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.access import Admission
from services.gateway.api import ApiContext, router
from services.gateway.connection import ADMISSION_STATE_KEY, HUB_STATE_KEY, GatewayConnection
from services.gateway.history import History, HistoryCollector
from services.gateway.hub import Hub
from services.gateway.metrics import HubCollector
from services.gateway.settings import GatewaySettings
from services.gateway.signin import DashboardGuard, add_signin_routes
from services.gateway.upstox_feed import ADMISSION_APP_STATE
from services.gateway.upstox_feed import router as upstox_router
from shared.metrics import registry_for
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
CLIENT_MODULE: Final = Path("client") / "tickstream.js"  # served at /client/tickstream.js
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)
PLACEHOLDER: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tickstream gateway</title></head>
<body><h1>tickstream gateway</h1>
<p>The dashboard is not installed here. WebSocket clients connect to <code>/ws</code>;
see <code>/api/status</code>, <code>/healthz</code> and <code>/metrics</code>.</p></body></html>
"""


class PageHeaders:
    """Security headers on the pages and assets (not on the JSON API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/api/") or path in _PLAIN_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-frame-options", b"DENY"),  # frame-ancestors for older browsers
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_PLAIN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def server_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn options the gateway needs: its own WebSocket protocol class."""
    return {"ws": GatewayConnection, "ws_max_size": settings.gateway_max_message_bytes}


def create_app(settings: GatewaySettings | None = None, static_dir: Path | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    static = STATIC_DIR if static_dir is None else static_dir
    hub = Hub(settings)
    admission = Admission.of(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await hub.start()
        upstox = UpstoxClient(settings.upstox_base_url, settings.upstox_timeout_seconds)
        history = History.create(
            hub.broker.redis,
            settings.gateway_history_per_minute,
            settings.gateway_history_cache_seconds,
        )
        app.state.api = ApiContext(
            hub=hub,
            upstox=upstox,
            sessions=SessionStore(hub.broker.redis, settings.token_encryption_key),
            catalogue=hub.catalogue,
            registry=registry_for(HubCollector(hub), HistoryCollector(history.stats)),
            history=history,
        )
        logger.info("gateway replica %s started", hub.replica_id)
        try:
            yield {HUB_STATE_KEY: hub, ADMISSION_STATE_KEY: admission}
        finally:
            await admission.viewers.aclose()
            await upstox.aclose()
            await hub.stop()

    app = FastAPI(title="tickstream gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.hub = hub
    app.include_router(router)
    app.include_router(upstox_router)
    setattr(app.state, ADMISSION_APP_STATE, admission)
    _add_pages(app, static)
    add_signin_routes(app, admission.viewers, STATIC_DIR / "signin.html")
    app.add_middleware(DashboardGuard, access=admission.viewers)
    app.add_middleware(PageHeaders)
    return app


def _add_pages(app: FastAPI, static: Path) -> None:
    index = static / "index.html"
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=static), name="static")

    module = static / CLIENT_MODULE

    @app.get("/client/tickstream.js", include_in_schema=False)
    async def client_module() -> Response:
        if not module.is_file():
            return Response(status_code=404)
        # Other sites' pages import it (a module script is fetched in CORS mode); a short max-age
        # with the ETag lets a new gateway's client reach them soon after an upgrade.
        headers = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
        return FileResponse(module, media_type="text/javascript; charset=utf-8", headers=headers)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(PLACEHOLDER, headers={"Cache-Control": "no-cache"})
