"""Typed results of the Upstox REST calls. Unknown fields are ignored (Upstox adds fields)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from shared.ist import IST

__all__ = [
    "Candle",
    "ExchangeTiming",
    "Holiday",
    "MarketStatus",
    "Profile",
    "TokenResponse",
    "UpstoxModel",
]


class UpstoxModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Profile(UpstoxModel):
    """`GET /v2/user/profile` data."""

    user_id: str
    user_name: str = ""
    email: str = ""
    broker: str = ""
    user_type: str = ""
    exchanges: list[str] = []
    products: list[str] = []
    order_types: list[str] = []
    poa: bool = False
    ddpi: bool = False
    is_active: bool = True


class TokenResponse(Profile):
    """The token exchange's flat answer: the profile's fields plus the tokens (SecretStr: never
    printed).

    Upstox gives no `expires_in`: the token lasts until the next 03:30 IST (`shared.ist`).
    """

    access_token: SecretStr
    extended_token: SecretStr | None = None


def _ist_from_ms(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, tz=IST)


class ExchangeTiming(UpstoxModel):
    """An exchange's trading window; times are epoch milliseconds as Upstox sends them."""

    exchange: str
    start_time: int
    end_time: int

    @property
    def start(self) -> dt.datetime:
        return _ist_from_ms(self.start_time)

    @property
    def end(self) -> dt.datetime:
        return _ist_from_ms(self.end_time)


class Holiday(UpstoxModel):
    """A market holiday: which exchanges close, and which open with special timings."""

    date: dt.date
    description: str = ""
    holiday_type: str = ""
    closed_exchanges: list[str] = []
    open_exchanges: list[ExchangeTiming] = []


class MarketStatus(UpstoxModel):
    exchange: str
    status: str
    last_updated: int | None = None  # epoch ms


class Candle(UpstoxModel):
    """One OHLC candle; Upstox sends it as `[ts, open, high, low, close, volume, oi]`."""

    ts: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: int = 0
    oi: int = 0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Candle:
        if len(row) < 5:
            raise ValueError(f"a candle row needs at least 5 values, got {len(row)}")
        names = ("ts", "open", "high", "low", "close", "volume", "oi")
        return cls.model_validate(dict(zip(names, row, strict=False)))
