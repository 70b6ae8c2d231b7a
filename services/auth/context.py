"""What auth's request handlers share: settings, Redis, the session store, the Upstox client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from services.auth.metrics import AuthCounts, EnvTokenOutcome
from services.auth.settings import AuthSettings
from shared.sessions import SessionStore
from shared.upstox.client import UpstoxClient


@dataclass
class AuthContext:
    settings: AuthSettings
    redis: aioredis.Redis
    store: SessionStore
    upstox: UpstoxClient
    metrics: AuthCounts
    bootstrap: asyncio.Task[EnvTokenOutcome] | None = None  # the UPSTOX_ACCESS_TOKEN check, if any


def get_context(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.auth
    return context


Ctx = Annotated[AuthContext, Depends(get_context)]
