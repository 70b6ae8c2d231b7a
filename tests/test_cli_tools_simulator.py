"""`tickstream profile | holidays | history` as subprocesses against the simulator.

The simulator serves from this test's event loop, so the tools run as asyncio subprocesses.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.support.simulator import SimulatorHandle, simulator  # noqa: F401
from tests.test_cli_tools import tickstream

# ruff: noqa: F811  (the `simulator` fixture is imported, then named by the tests)


def upstox_env(sim: SimulatorHandle, redis_url: str, **extra: str) -> dict[str, str]:
    return {"UPSTOX_BASE_URL": sim.http_url, "REDIS_URL": redis_url, **extra}


async def test_profile_from_the_environment_token(
    tmp_path: Path, simulator: SimulatorHandle, redis_url: str
) -> None:
    env = upstox_env(simulator, redis_url, UPSTOX_ACCESS_TOKEN=simulator.demo_token)
    table = await tickstream("profile", cwd=tmp_path, **env)
    as_json = await tickstream("profile", "--json", cwd=tmp_path, **env)

    assert table.status == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["User", "ID", "DEMO01"]
    assert "Name         Demo Trader" in lines
    assert any(line.startswith("Exchanges") and "NSE, NFO" in line for line in lines)
    assert as_json.status == 0
    assert json.loads(as_json.out)["user_id"] == "DEMO01"
    for run in (table, as_json):
        assert simulator.demo_token not in run.out + run.err


async def test_profile_from_the_encrypted_session_in_redis(
    tmp_path: Path, simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    key = Fernet.generate_key().decode()
    await SessionStore(redis_client, key).save(Profile(user_id="DEMO01"), simulator.demo_token)
    env = upstox_env(simulator, redis_url, TOKEN_ENCRYPTION_KEY=key)
    run = await tickstream("profile", "--json", cwd=tmp_path, **env)
    assert run.status == 0, run.err
    assert json.loads(run.out)["email"] == "demo@example.com"


async def test_holidays_table_and_json(
    tmp_path: Path, simulator: SimulatorHandle, redis_url: str
) -> None:
    env = upstox_env(simulator, redis_url, UPSTOX_ACCESS_TOKEN=simulator.demo_token)
    table = await tickstream("holidays", "--date", "2026-03-03", cwd=tmp_path, **env)
    year = await tickstream("holidays", "--json", cwd=tmp_path, **env)

    assert table.status == 0, table.err
    header, rule, row = table.out.splitlines()
    assert header.split() == ["DATE", "DESCRIPTION", "TYPE", "CLOSED", "EXCHANGES", "OPEN", "(IST)"]
    assert set(rule) == {"-", " "}
    assert row.startswith("2026-03-03  Holi")
    assert "TRADING_HOLIDAY" in row and "NSE, NFO" in row and "MCX 17:00-23:30" in row
    holidays = json.loads(year.out)
    assert holidays and {"date", "description", "holiday_type", "closed_exchanges"} <= set(
        holidays[0]
    )


async def test_history_table_json_and_intraday(
    tmp_path: Path, simulator: SimulatorHandle, redis_url: str
) -> None:
    env = upstox_env(simulator, redis_url, UPSTOX_ACCESS_TOKEN=simulator.demo_token)
    key = "NSE_INDEX|Nifty 50"
    span = ["--unit", "days", "--interval", "1", "--from", "2025-01-01", "--to", "2025-01-10"]
    table = await tickstream("history", key, *span, cwd=tmp_path, **env)
    as_json = await tickstream("history", key, *span, "--json", cwd=tmp_path, **env)
    intraday = await tickstream(
        "history", key, "--intraday", "--unit", "minutes", "--interval", "30", cwd=tmp_path, **env
    )

    assert table.status == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["DATE", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "OI"]
    rows = lines[2:-1]
    assert lines[-1] == f"{len(rows)} candles"
    assert rows and rows == sorted(rows)
    assert rows[0].startswith("2025-01-0") and rows[-1] < "2025-01-11"
    candles = json.loads(as_json.out)
    assert len(candles) == len(rows)
    assert [c["ts"][:10] for c in candles] == [row[:10] for row in rows]
    assert intraday.status == 0, intraday.err
    assert intraday.out.startswith("TIME (IST)") or "no candles" in intraday.out
    assert intraday.out.splitlines()[-1].endswith("candles") or "no candles" in intraday.out


async def test_upstox_errors_are_one_line(
    tmp_path: Path, simulator: SimulatorHandle, redis_url: str
) -> None:
    env = upstox_env(simulator, redis_url, UPSTOX_ACCESS_TOKEN=simulator.demo_token)
    too_long = await tickstream(
        "history",
        "NSE_EQ|INE002A01018",
        *["--unit", "minutes", "--from", "2025-01-01", "--to", "2025-06-30"],
        cwd=tmp_path,
        **env,
    )
    assert "UDAPI1148" in too_long.assert_one_line_error()

    no_token = await tickstream("holidays", cwd=tmp_path, **upstox_env(simulator, redis_url))
    assert "wants a login for the calendar" in no_token.assert_one_line_error()

    await simulator.expire_tokens()
    expired = await tickstream("profile", cwd=tmp_path, **env)
    line = expired.assert_one_line_error()
    assert "Upstox refused the token" in line and "UDAPI100050" in line
    assert simulator.demo_token not in expired.err
