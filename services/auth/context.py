"""What auth's request handlers share: settings, Redis, the session store, the Upstox client,
the durable copy of the login (`Keeper`), the login-start and operator sign-in limits, the
operator sessions, and the background tasks' handles."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from services.auth.keeper import Keeper
from services.auth.limits import AuthorizeLimit
from services.auth.metrics import AuthCounts, EnvTokenOutcome
from services.auth.operator import Operators
from services.auth.settings import AuthSettings
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient

if TYPE_CHECKING:
    from services.auth.bootstrap import EnvToken


@dataclass
class AuthContext:
    settings: AuthSettings
    redis: aioredis.Redis
    store: SessionStore
    upstox: UpstoxClient
    metrics: AuthCounts
    keeper: Keeper
    authorize_limit: AuthorizeLimit  # logins started per client address
    operators: Operators  # operator sign-in codes and sessions
    operator_login_limit: AuthorizeLimit  # operator sign-in attempts per client address
    env_token: EnvToken | None = None  # UPSTOX_ACCESS_TOKEN, if set
    bootstrap: asyncio.Task[EnvTokenOutcome] | None = None  # the UPSTOX_ACCESS_TOKEN check, if any
    restorer: asyncio.Task[None] | None = None  # the restore loop (`restore.py`)
    announcer: asyncio.Task[None] | None = None  # the start's operator sign-in link, if any


def get_context(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.auth
    return context


Ctx = Annotated[AuthContext, Depends(get_context)]
