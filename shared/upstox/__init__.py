"""Upstox REST: an async client, its typed results, its exceptions, and a shared backoff."""

from shared.upstox.backoff import Backoff
from shared.upstox.client import UpstoxClient, dialog_url
from shared.upstox.errors import (
    UpstoxAuthError,
    UpstoxError,
    UpstoxRateLimited,
    UpstoxRequestError,
    UpstoxServerError,
    UpstoxUnavailable,
)
from shared.upstox.models import (
    Candle,
    ExchangeTiming,
    Holiday,
    MarketStatus,
    Profile,
    TokenResponse,
)

__all__ = [
    "Backoff",
    "Candle",
    "ExchangeTiming",
    "Holiday",
    "MarketStatus",
    "Profile",
    "TokenResponse",
    "UpstoxAuthError",
    "UpstoxClient",
    "UpstoxError",
    "UpstoxRateLimited",
    "UpstoxRequestError",
    "UpstoxServerError",
    "UpstoxUnavailable",
    "dialog_url",
]
