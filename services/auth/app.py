"""auth: the Upstox OAuth login, the stored session, the user-profile endpoint, and the
operator who alone may use them (`signin.py`, `guard.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.auth import login, session, signin
from services.auth.bootstrap import EnvToken, bootstrap_env_token
from services.auth.context import AuthContext, Ctx
from services.auth.durable import DurableState
from services.auth.keeper import Keeper
from services.auth.limits import AuthorizeLimit
from services.auth.metrics import AuthCollector, AuthCounts
from services.auth.operator import Operators, announce_link
from services.auth.respond import NoFraming, problem
from services.auth.restore import Restorer
from services.auth.settings import DEMO_CLIENT_ID, AuthSettings
from shared.metrics import metrics_response, registry_for
from shared.redis_client import connect_redis
from shared.sessions import SessionDecryptError, SessionStore
from shared.tasks import cancel_and_wait
from shared.upstox.backoff import Backoff
from shared.upstox.client import UpstoxClient

logger = logging.getLogger(__name__)


def create_app(settings: AuthSettings) -> FastAPI:
    metrics = AuthCounts()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = _open_context(settings, metrics)
        app.state.auth = context
        if _is_real_upstox(settings.upstox_base_url) and settings.api_key == DEMO_CLIENT_ID:
            logger.warning("API_KEY is the simulator's demo client id; set your Upstox API key")
        if not context.keeper.enabled:
            logger.warning(
                "AUTH_STATE_DIR is not set: the login lives in Redis only, and a Redis crash "
                "loses it"
            )
        if context.env_token is not None:
            context.bootstrap = asyncio.create_task(
                bootstrap_env_token(context, context.env_token, Backoff(initial=1.0, maximum=30.0)),
                name="auth-env-token",
            )
        context.restorer = asyncio.create_task(Restorer(context).run(), name="auth-restore")
        if settings.auth_operator_password is None:
            context.announcer = asyncio.create_task(
                announce_link(
                    context.redis,
                    settings.upstox_redirect_uri,
                    settings.auth_operator_link_minutes,
                    Backoff(initial=1.0, maximum=30.0),
                ),
                name="auth-operator-link",
            )
        try:
            yield
        finally:
            tasks = (context.bootstrap, context.restorer, context.announcer)
            await cancel_and_wait([task for task in tasks if task is not None])
            await context.upstox.aclose()
            await context.redis.aclose()

    app = FastAPI(title="tickstream auth", lifespan=lifespan, docs_url=None, redoc_url=None)
    if settings.auth_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.auth_cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )
    app.add_middleware(NoFraming)
    app.include_router(login.router)
    app.include_router(session.router)
    app.include_router(signin.router)
    _add_operations(app, registry_for(AuthCollector(metrics)))
    _add_error_handlers(app)
    return app


def _is_real_upstox(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "upstox.com" or host.endswith(".upstox.com")


def _open_context(settings: AuthSettings, metrics: AuthCounts) -> AuthContext:
    redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    directory = settings.auth_state_dir
    token = settings.upstox_access_token
    return AuthContext(
        settings=settings,
        redis=redis,
        store=SessionStore(redis, settings.token_encryption_key),
        upstox=UpstoxClient(settings.upstox_base_url, settings.upstox_timeout_seconds),
        metrics=metrics,
        keeper=Keeper(None if directory is None else DurableState(directory), metrics),
        authorize_limit=AuthorizeLimit(settings.auth_authorize_per_minute),
        operators=Operators(redis, round(settings.auth_operator_session_hours * 3600)),
        operator_login_limit=AuthorizeLimit(settings.auth_operator_logins_per_minute),
        env_token=None if token is None else EnvToken(token.get_secret_value()),
    )


def _add_operations(app: FastAPI, registry: CollectorRegistry) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(context: Ctx) -> Response:
        try:
            await context.redis.ping()
        except (RedisError, OSError) as error:
            logger.warning("not ready: Redis unreachable (%s)", type(error).__name__)
            return JSONResponse({"ready": False, "reason": "redis unreachable"}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return metrics_response(registry)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RedisError)
    async def redis_down(request: Request, error: Exception) -> Response:
        logger.warning("Redis failed during %s: %s", request.url.path, type(error).__name__)
        return problem(
            request,
            503,
            "store_unavailable",
            "the session store (Redis) is unreachable; try again shortly",
            "Service unavailable",
        )

    @app.exception_handler(SessionDecryptError)
    async def unreadable(request: Request, error: Exception) -> Response:
        logger.error("%s", error)
        return problem(request, 500, "token_unreadable", str(error), "Stored token unreadable")
