"""REST endpoints against Upstox's documented shapes, errors and limits, over real sockets."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import httpx

from shared.ist import IST
from tests.simulator.helpers import assert_error, get
from tests.support.simulator import SimulatorHandle, running_simulator

NIFTY = quote("NSE_INDEX|Nifty 50", safe="")
RELIANCE = quote("NSE_EQ|INE002A01018", safe="")


def today() -> dt.date:
    return dt.datetime.now(IST).date()


async def test_profile_shape(simulator: SimulatorHandle) -> None:
    response = await get(simulator, "/v2/user/profile", simulator.demo_token)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert set(body["data"]) == {
        "email",
        "exchanges",
        "products",
        "broker",
        "user_id",
        "user_name",
        "order_types",
        "user_type",
        "poa",
        "ddpi",
        "is_active",
    }
    assert body["data"]["user_name"] == "Demo Trader"


async def test_missing_unknown_or_malformed_bearer_is_401(simulator: SimulatorHandle) -> None:
    assert_error(await get(simulator, "/v2/user/profile"), 401, "UDAPI100050")
    assert_error(await get(simulator, "/v2/user/profile", "f" * 48), 401, "UDAPI100050")
    async with httpx.AsyncClient(base_url=simulator.http_url) as client:
        basic = await client.get("/v2/user/profile", headers={"Authorization": "Basic abc"})
    assert_error(basic, 401, "UDAPI100050")
    assert_error(
        await get(simulator, "/v3/feed/market-data-feed/authorize", "nope"), 401, "UDAPI100050"
    )


async def test_unknown_endpoint_gets_the_envelope(simulator: SimulatorHandle) -> None:
    assert_error(await get(simulator, "/v2/nothing/here", simulator.demo_token), 404, "UDAPI10000")


async def test_holidays_and_timings_and_status(simulator: SimulatorHandle) -> None:
    token = simulator.demo_token
    holidays = (await get(simulator, "/v2/market/holidays", token)).json()["data"]
    assert holidays
    for entry in holidays:
        assert set(entry) == {
            "date",
            "description",
            "holiday_type",
            "closed_exchanges",
            "open_exchanges",
        }
        dt.date.fromisoformat(entry["date"])
        assert entry["holiday_type"] in ("TRADING_HOLIDAY", "SETTLEMENT_HOLIDAY")
        for session in entry["open_exchanges"]:
            assert isinstance(session["start_time"], int) and session["end_time"] > 0
    christmas = f"{today().year}-12-25"
    one = (await get(simulator, f"/v2/market/holidays/{christmas}", token)).json()["data"]
    if dt.date.fromisoformat(christmas).weekday() < 5:
        assert [entry["description"] for entry in one] == ["Christmas"]
        assert "NSE" in one[0]["closed_exchanges"]
    timings = (await get(simulator, "/v2/market/timings/2026-11-18", token)).json()["data"]
    assert {entry["exchange"] for entry in timings} >= {"NSE", "NFO", "BSE", "MCX"}
    for entry in timings:
        assert entry["start_time"] < entry["end_time"]
    status = (await get(simulator, "/v2/market/status/NSE", token)).json()["data"]
    assert status["exchange"] == "NSE" and status["status"] == "NORMAL_OPEN"
    assert isinstance(status["last_updated"], int)
    assert_error(await get(simulator, "/v2/market/status/XYZ", token), 400, "UDAPI100036")
    assert_error(await get(simulator, "/v2/market/timings/18-11-2026", token), 400, "UDAPI100036")


async def test_ist_clock_timings_follow_exchange_hours() -> None:
    async with running_simulator(simulator_market_clock="ist") as sim:
        data = (await get(sim, "/v2/market/timings/2026-11-18", sim.demo_token)).json()["data"]
        nse = next(entry for entry in data if entry["exchange"] == "NSE")
        start = dt.datetime.fromtimestamp(nse["start_time"] / 1000, IST)
        end = dt.datetime.fromtimestamp(nse["end_time"] / 1000, IST)
        assert (start.hour, start.minute, end.hour, end.minute) == (9, 15, 15, 30)
        weekend = await get(sim, "/v2/market/timings/2026-11-21", sim.demo_token)
        assert weekend.json()["data"] == []


def check_candles(rows: list[list[object]]) -> list[dt.datetime]:
    stamps = []
    for row in rows:
        assert len(row) == 7
        ts, opening, high, low, close, volume, oi = row
        assert isinstance(ts, str) and ts.endswith("+05:30")
        assert isinstance(volume, int) and isinstance(oi, float)
        assert isinstance(low, float) and isinstance(high, float)
        assert low <= opening <= high and low <= close <= high  # type: ignore[operator]
        stamps.append(dt.datetime.fromisoformat(ts))
    assert stamps == sorted(stamps, reverse=True)  # newest first
    return stamps


async def test_historical_candles_with_encoded_keys(simulator: SimulatorHandle) -> None:
    token = simulator.demo_token
    day = today() - dt.timedelta(days=3)
    path = f"/v3/historical-candle/{NIFTY}/minutes/30/{day}/{day}"
    response = await get(simulator, path, token)
    assert response.status_code == 200, response.text
    stamps = check_candles(response.json()["data"]["candles"])
    assert len(stamps) == 48  # the "open" clock trades all day
    assert {stamp.date() for stamp in stamps} == {day}

    days = await get(
        simulator,
        f"/v3/historical-candle/{RELIANCE}/days/1/{today()}/{today() - dt.timedelta(30)}",
        token,
    )
    rows = days.json()["data"]["candles"]
    stamps = check_candles(rows)
    assert today() not in {stamp.date() for stamp in stamps}  # today is intraday's
    assert all(row[5] > 0 for row in rows)

    for unit in ("weeks", "months"):
        longer = await get(
            simulator, f"/v3/historical-candle/{RELIANCE}/{unit}/1/{today()}/2025-01-01", token
        )
        check_candles(longer.json()["data"]["candles"])
    hours = await get(simulator, f"/v3/historical-candle/{NIFTY}/hours/2/{day}", token)
    assert hours.status_code == 200  # from_date may be left out


async def test_intraday_candles_end_with_the_forming_one(simulator: SimulatorHandle) -> None:
    response = await get(
        simulator, f"/v3/historical-candle/intraday/{RELIANCE}/minutes/5", simulator.demo_token
    )
    stamps = check_candles(response.json()["data"]["candles"])
    assert stamps and stamps[0].date() == today()
    now = dt.datetime.now(IST)
    assert stamps[0] <= now < stamps[0] + dt.timedelta(minutes=10)
    day = await get(
        simulator, f"/v3/historical-candle/intraday/{RELIANCE}/days/1", simulator.demo_token
    )
    assert len(day.json()["data"]["candles"]) == 1


async def test_candle_errors(simulator: SimulatorHandle) -> None:
    token = simulator.demo_token
    base = f"/v3/historical-candle/{RELIANCE}"
    assert_error(
        await get(simulator, f"{base}/minutes/1/2025-03-31/2025-02-01", token), 400, "UDAPI1148"
    )
    assert_error(
        await get(simulator, f"{base}/minutes/30/2025-03-31/2024-12-01", token), 400, "UDAPI1148"
    )
    assert (
        await get(simulator, f"{base}/minutes/30/2025-03-31/2025-01-01", token)
    ).status_code == 200
    assert_error(
        await get(simulator, f"{base}/days/1/2025-03-31/2014-01-01", token), 400, "UDAPI1148"
    )
    assert_error(
        await get(simulator, f"{base}/days/1/2025-01-01/2025-03-31", token), 400, "UDAPI1148"
    )
    assert_error(
        await get(simulator, f"{base}/minutes/301/2025-03-31/2025-03-30", token), 400, "UDAPI100036"
    )
    assert_error(
        await get(simulator, f"{base}/hours/6/2025-03-31/2025-03-30", token), 400, "UDAPI100036"
    )
    assert_error(
        await get(simulator, f"{base}/days/2/2025-03-31/2025-03-30", token), 400, "UDAPI100036"
    )
    assert_error(
        await get(simulator, f"{base}/seconds/1/2025-03-31/2025-03-30", token), 400, "UDAPI100036"
    )
    assert_error(
        await get(simulator, f"{base}/days/1/2025-13-01/2025-03-30", token), 400, "UDAPI100036"
    )
    assert_error(
        await get(simulator, f"/v3/historical-candle/intraday/{RELIANCE}/weeks/1", token),
        400,
        "UDAPI100036",
    )
    bad_key = quote("NSE_EQ|bad key!", safe="")
    assert_error(
        await get(simulator, f"/v3/historical-candle/{bad_key}/days/1/2025-03-31", token),
        400,
        "UDAPI100011",
    )


async def test_same_seed_same_history_other_seed_other_history() -> None:
    day = today() - dt.timedelta(days=2)
    path = f"/v3/historical-candle/{RELIANCE}/minutes/15/{day}/{day}"
    async with (
        running_simulator(simulator_seed=7) as first,
        running_simulator(simulator_seed=7) as second,
        running_simulator(simulator_seed=8) as third,
    ):
        a = (await get(first, path, first.demo_token)).json()["data"]["candles"]
        b = (await get(second, path, second.demo_token)).json()["data"]["candles"]
        c = (await get(third, path, third.demo_token)).json()["data"]["candles"]
    assert a == b
    assert a != c


async def test_rate_limits_answer_429() -> None:
    async with running_simulator(simulator_rate_limit_per_minute=5) as sim:
        responses = [await get(sim, "/v2/user/profile", sim.demo_token) for _ in range(7)]
        assert [response.status_code for response in responses] == [200] * 5 + [429] * 2
        assert_error(responses[-1], 429, "UDAPI10005")
        # the limit is per user: someone else still gets through
        token = (await sim.login(user_id="DEMO02"))["access_token"]
        assert (await get(sim, "/v2/user/profile", token)).status_code == 200


async def test_extended_token_reads_but_may_not_open_the_feed(simulator: SimulatorHandle) -> None:
    body = await simulator.login()
    extended = body["extended_token"]
    assert (await get(simulator, "/v2/user/profile", extended)).status_code == 200
    assert_error(
        await get(simulator, "/v3/feed/market-data-feed/authorize", extended), 401, "UDAPI100067"
    )
