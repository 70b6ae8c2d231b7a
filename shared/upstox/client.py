"""An async client for the Upstox REST API (or the simulator, which speaks the same protocol).

One `UpstoxClient` serves every user: the access token is passed to each call, never kept.
Every call has a timeout. Failures raise the `shared.upstox.errors` hierarchy; 429 and 5xx (and,
for idempotent calls, no response at all) are retried a bounded number of times with jittered
exponential backoff, waiting at least as long as a `Retry-After` header asks. 401 is never
retried: a refused token stays refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.upstox.backoff import Backoff
from shared.upstox.errors import (
    UpstoxError,
    UpstoxRateLimited,
    UpstoxServerError,
    UpstoxUnavailable,
    error_from_response,
)
from shared.upstox.models import (
    Candle,
    ExchangeTiming,
    Holiday,
    MarketStatus,
    Profile,
    TokenResponse,
)

__all__ = ["CANDLE_UNITS", "UpstoxClient", "dialog_url", "path_param"]

logger = logging.getLogger(__name__)

DIALOG_PATH: Final = "/v2/login/authorization/dialog"
TOKEN_PATH: Final = "/v2/login/authorization/token"
CANDLE_UNITS: Final = ("minutes", "hours", "days", "weeks", "months")

ModelT = TypeVar("ModelT", bound=BaseModel)


def path_param(value: object) -> str:
    """A path segment, percent-encoded (`|` -> %7C, space -> %20, `/` too)."""
    return quote(str(value), safe="")


def dialog_url(base_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    """Upstox's login dialog URL; `redirect_uri` must be exactly the registered one."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
        },
        quote_via=quote,
    )
    return f"{base_url.rstrip('/')}{DIALOG_PATH}?{query}"


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _describe_validation(error: ValidationError) -> str:
    # Only locations and messages: pydantic's own text repeats the input, which may hold a token.
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(body)"
        problems.append(f"{where}: {problem['msg']}")
    return "; ".join(problems[:5])


def _parse(adapter: TypeAdapter[Any], value: Any, what: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise UpstoxServerError(
            f"unexpected {what} response from Upstox: {_describe_validation(error)}"
        ) from None


def _data(body: Any, what: str) -> Any:
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    raise UpstoxServerError(f"unexpected {what} response from Upstox: no 'data' field")


_PROFILE: Final = TypeAdapter(Profile)
_TOKEN: Final = TypeAdapter(TokenResponse)
_HOLIDAYS: Final = TypeAdapter(list[Holiday])
_TIMINGS: Final = TypeAdapter(list[ExchangeTiming])
_STATUS: Final = TypeAdapter(MarketStatus)
_CANDLE_ROWS: Final = TypeAdapter(list[list[Any]])


class UpstoxClient:
    """Async Upstox REST client. Use as `async with UpstoxClient(url) as upstox:` or `aclose()`."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        *,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_initial: float = 0.5,
        backoff_maximum: float = 8.0,
        max_retry_after: float = 30.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self._backoff_initial = backoff_initial
        self._backoff_maximum = backoff_maximum
        self._max_retry_after = max_retry_after
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "tickstream"},
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- login ---------------------------------------------------------------------------

    def login_url(self, client_id: str, redirect_uri: str, state: str) -> str:
        return dialog_url(self.base_url, client_id, redirect_uri, state)

    async def exchange_code(
        self, code: str, client_id: str, client_secret: str, redirect_uri: str
    ) -> TokenResponse:
        """Trade a one-time authorization code for a token. Not retried after a send that may
        have reached Upstox: the code is single use, so a second try could only be refused."""
        body = await self._request(
            "POST",
            TOKEN_PATH,
            data={
                "code": code,
                "client_id": client_id,
                "client_secret": client_secret,
                "redirect_uri": redirect_uri,
                "grant_type": "authorization_code",
            },
            idempotent=False,
            secrets=(code, client_secret),
        )
        token: TokenResponse = _parse(_TOKEN, body, "token")
        return token

    async def logout(self, token: str) -> None:
        await self._request("DELETE", "/v2/logout", token=token)

    # ---- user and market -----------------------------------------------------------------

    async def profile(self, token: str) -> Profile:
        body = await self._request("GET", "/v2/user/profile", token=token)
        profile: Profile = _parse(_PROFILE, _data(body, "profile"), "profile")
        return profile

    async def holidays(self, token: str | None, date: dt.date | None = None) -> list[Holiday]:
        """This year's holidays, or the given date's (an empty list: not a holiday)."""
        path = "/v2/market/holidays"
        if date is not None:
            path += "/" + path_param(date.isoformat())
        data = _data(await self._request("GET", path, token=token), "holidays")
        if isinstance(data, dict):
            data = [data]
        holidays: list[Holiday] = _parse(_HOLIDAYS, data or [], "holidays")
        return holidays

    async def market_timings(self, token: str | None, date: dt.date) -> list[ExchangeTiming]:
        path = "/v2/market/timings/" + path_param(date.isoformat())
        data = _data(await self._request("GET", path, token=token), "market timings")
        timings: list[ExchangeTiming] = _parse(_TIMINGS, data or [], "market timings")
        return timings

    async def market_status(self, token: str | None, exchange: str) -> MarketStatus:
        path = "/v2/market/status/" + path_param(exchange)
        data = _data(await self._request("GET", path, token=token), "market status")
        status: MarketStatus = _parse(_STATUS, data, "market status")
        return status

    # ---- candles (V3) --------------------------------------------------------------------

    async def historical_candles(
        self,
        token: str,
        instrument_key: str,
        unit: str,
        interval: int | str,
        to_date: dt.date | str,
        from_date: dt.date | str | None = None,
    ) -> list[Candle]:
        """Candles from `from_date` to `to_date` (inclusive), oldest first."""
        segments = [instrument_key, unit, interval, _iso(to_date)]
        if from_date is not None:
            segments.append(_iso(from_date))
        path = "/v3/historical-candle/" + "/".join(path_param(s) for s in segments)
        return await self._candles(token, path)

    async def intraday_candles(
        self, token: str, instrument_key: str, unit: str, interval: int | str
    ) -> list[Candle]:
        """Today's candles, oldest first."""
        segments = [instrument_key, unit, interval]
        path = "/v3/historical-candle/intraday/" + "/".join(path_param(s) for s in segments)
        return await self._candles(token, path)

    async def _candles(self, token: str, path: str) -> list[Candle]:
        data = _data(await self._request("GET", path, token=token), "candles")
        rows = data.get("candles", []) if isinstance(data, dict) else None
        if rows is None:
            raise UpstoxServerError("unexpected candles response from Upstox: no 'candles' list")
        candles: list[Candle] = []
        for row in _parse(_CANDLE_ROWS, rows, "candles"):
            try:
                candles.append(Candle.from_row(row))
            except (ValidationError, ValueError) as error:
                detail = (
                    _describe_validation(error) if isinstance(error, ValidationError) else error
                )
                raise UpstoxServerError(f"unexpected candle row from Upstox: {detail}") from None
        # Upstox answers newest first; callers want time order.
        candles.sort(key=lambda candle: candle.ts)
        return candles

    # ---- feed ----------------------------------------------------------------------------

    async def authorize_feed(self, token: str) -> str:
        """A fresh single-use feed URL. It holds a one-time code: never log it."""
        body = await self._request("GET", "/v3/feed/market-data-feed/authorize", token=token)
        data = _data(body, "feed authorize")
        url = None
        if isinstance(data, dict):
            url = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise UpstoxServerError(
                "unexpected feed authorize response from Upstox: no WebSocket URL"
            )
        return url

    # ---- transport -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        data: Mapping[str, str] | None = None,
        idempotent: bool = True,
        secrets: tuple[str, ...] = (),
    ) -> Any:
        """The JSON body of a successful response; raises `UpstoxError` otherwise."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        scrub = (*secrets, token) if token else secrets
        backoff = Backoff(self._backoff_initial, self._backoff_maximum, factor=2.0, jitter=0.5)
        attempt = 0
        while True:
            error = await self._attempt(method, path, headers, data, scrub)
            if isinstance(error, _Success):
                return error.body
            if not self._retryable(error, idempotent) or attempt >= self.max_retries:
                raise error
            attempt += 1
            delay = backoff.next_delay()
            if isinstance(error, UpstoxRateLimited) and error.retry_after is not None:
                delay = max(delay, min(error.retry_after, self._max_retry_after))
            logger.warning(
                "Upstox %s %s failed (%s); retry %d/%d in %.2fs",
                method,
                path,
                error.describe(),
                attempt,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    @staticmethod
    def _retryable(error: UpstoxError, idempotent: bool) -> bool:
        if isinstance(error, UpstoxRateLimited):
            return True  # refused before any work was done: safe even for a POST
        return idempotent and isinstance(error, UpstoxServerError | UpstoxUnavailable)

    async def _attempt(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        scrub: tuple[str, ...],
    ) -> _Success | UpstoxError:
        try:
            response = await self._http.request(method, path, headers=headers, data=data)
        except httpx.TimeoutException:
            return UpstoxUnavailable(f"no answer from {self.base_url} within {self.timeout:g}s")
        except httpx.HTTPError as error:
            # The exception text can name the URL; the type and the OS reason are enough.
            reason = str(error.__cause__ or type(error).__name__)
            for secret in scrub:
                reason = reason.replace(secret, "***")
            return UpstoxUnavailable(f"cannot reach {self.base_url}: {reason}")
        try:
            body = response.json()
        except ValueError:
            body = None
        logger.debug("Upstox %s %s -> %d", method, path, response.status_code)
        if response.is_success:
            if body is None:
                return UpstoxServerError(
                    "Upstox answered with a body that is not JSON", status=response.status_code
                )
            return _Success(body)
        return error_from_response(
            response.status_code,
            body,
            retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            secrets=scrub,
        )


class _Success:
    __slots__ = ("body",)

    def __init__(self, body: Any) -> None:
        self.body = body


def _iso(value: dt.date | str) -> str:
    return value.isoformat() if isinstance(value, dt.date) else value
