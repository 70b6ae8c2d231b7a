"""The Upstox client against the simulator: every call it makes, and Upstox's own errors."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from shared.ist import IST
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError, UpstoxRateLimited, UpstoxRequestError
from tests.support.simulator import (
    SimulatorHandle,
    login_via_dialog,
    running_simulator,
    simulator,  # noqa: F401  (fixture)
)

# ruff: noqa: F811  (the `simulator` fixture is imported, then named by the tests)

NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"


async def test_login_code_exchange_and_logout(simulator: SimulatorHandle) -> None:
    redirect = simulator.redirect_uri
    async with UpstoxClient(simulator.http_url) as upstox:
        url = upstox.login_url(simulator.client_id, redirect, "state-1")
        assert url.startswith(f"{simulator.http_url}/v2/login/authorization/dialog?")
        code = await login_via_dialog(simulator.http_url, simulator.client_id, redirect, "state-1")
        token = await upstox.exchange_code(
            code, simulator.client_id, simulator.client_secret, redirect
        )
        assert (token.user_id, token.user_name, token.broker) == ("DEMO01", "Demo Trader", "UPSTOX")
        secret = token.access_token.get_secret_value()
        assert secret not in repr(token)
        assert (await upstox.profile(secret)).email == "demo@example.com"

        with pytest.raises(UpstoxRequestError) as reused:
            await upstox.exchange_code(code, simulator.client_id, simulator.client_secret, redirect)
        assert (reused.value.status, reused.value.code) == (400, "UDAPI100016")
        assert code not in str(reused.value)

        await upstox.logout(secret)
        with pytest.raises(UpstoxAuthError) as refused:
            await upstox.profile(secret)
    assert (refused.value.status, refused.value.code) == (401, "UDAPI100050")
    assert secret not in str(refused.value)


async def test_profile_and_market_calendar(simulator: SimulatorHandle) -> None:
    token = simulator.demo_token
    async with UpstoxClient(simulator.http_url) as upstox:
        profile = await upstox.profile(token)
        year = await upstox.holidays(token)
        republic_day = await upstox.holidays(token, dt.date(2026, 1, 26))
        holi = await upstox.holidays(token, dt.date(2026, 3, 3))
        ordinary_day = await upstox.holidays(token, dt.date(2026, 1, 27))
        timings = await upstox.market_timings(token, dt.date(2026, 1, 27))
        status = await upstox.market_status(token, "NSE")

    assert profile.user_id == "DEMO01" and "NSE" in profile.exchanges and profile.ddpi
    assert year and all(holiday.holiday_type for holiday in year)
    [holiday] = republic_day
    assert holiday.date == dt.date(2026, 1, 26)
    assert holiday.description == "Republic Day"
    assert holiday.holiday_type == "TRADING_HOLIDAY"
    assert "NSE" in holiday.closed_exchanges
    assert holiday.open_exchanges == []  # MCX stays shut on Republic Day
    [mcx] = holi[0].open_exchanges  # and keeps its evening session on Holi
    assert mcx.exchange == "MCX"
    assert (mcx.start.hour, mcx.start.minute, mcx.end.hour, mcx.end.minute) == (17, 0, 23, 30)
    assert ordinary_day == []
    assert {timing.exchange for timing in timings} >= {"NSE", "MCX"}
    assert all(timing.start_time < timing.end_time for timing in timings)
    assert status.exchange == "NSE" and status.status


async def test_candles_are_oldest_first_and_bad_ranges_are_udapi1148(
    simulator: SimulatorHandle,
) -> None:
    token = simulator.demo_token
    async with UpstoxClient(simulator.http_url) as upstox:
        days = await upstox.historical_candles(
            token, NIFTY, "days", 1, dt.date(2025, 1, 31), dt.date(2025, 1, 1)
        )
        minutes = await upstox.intraday_candles(token, RELIANCE, "minutes", 5)
        with pytest.raises(UpstoxRequestError) as backwards:
            await upstox.historical_candles(
                token, NIFTY, "days", 1, dt.date(2025, 1, 1), dt.date(2025, 1, 31)
            )
        with pytest.raises(UpstoxRequestError) as too_long:
            await upstox.historical_candles(
                token, RELIANCE, "minutes", 1, dt.date(2025, 6, 30), dt.date(2025, 1, 1)
            )

    assert days
    stamps = [candle.ts for candle in days]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert dt.date(2025, 1, 1) <= stamps[0].astimezone(IST).date()
    assert stamps[-1].astimezone(IST).date() <= dt.date(2025, 1, 31)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in days)
    intraday = [candle.ts for candle in minutes]
    assert intraday == sorted(intraday)
    for error in (backwards.value, too_long.value):
        assert (error.status, error.code) == (400, "UDAPI1148")


async def test_feed_authorize_gives_a_one_time_websocket_url(simulator: SimulatorHandle) -> None:
    async with UpstoxClient(simulator.http_url) as upstox:
        first = await upstox.authorize_feed(simulator.demo_token)
        second = await upstox.authorize_feed(simulator.demo_token)
    assert first.startswith(("ws://", "wss://")) and second.startswith(("ws://", "wss://"))
    assert first != second


async def test_rate_limits_become_upstox_rate_limited_after_bounded_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.upstox.client")
    async with (
        running_simulator(simulator_rate_limit_per_minute=2) as sim,
        UpstoxClient(
            sim.http_url, max_retries=2, backoff_initial=0.01, backoff_maximum=0.02
        ) as upstox,
    ):
        await upstox.profile(sim.demo_token)
        await upstox.profile(sim.demo_token)
        with pytest.raises(UpstoxRateLimited) as limited:
            await upstox.profile(sim.demo_token)
    assert (limited.value.status, limited.value.code) == (429, "UDAPI10005")
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "retry 1/2" in retries[0] and "retry 2/2" in retries[1]
    assert sim.demo_token not in caplog.text


async def test_retries_ride_out_a_per_second_limit() -> None:
    # One request a second: the default backoff's delays add up past a second within three
    # retries, so every call gets through however fast the machine is.
    async with (
        running_simulator(simulator_rate_limit_per_second=1) as sim,
        UpstoxClient(sim.http_url, max_retries=3) as upstox,
    ):
        users = [(await upstox.profile(sim.demo_token)).user_id for _ in range(3)]
    assert users == ["DEMO01"] * 3
