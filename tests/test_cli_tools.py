"""`tickstream profile | history | holidays` as subprocesses: failures are one line, not a trace.

The runs against the simulator are in `test_cli_tools_simulator.py`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from shared.sessions import SessionStore
from shared.upstox.models import Profile

TICKSTREAM = Path(sys.executable).parent / "tickstream"
SECRET_TOKEN = "cli-secret-token-7d1e"


@dataclass
class Run:
    status: int
    out: str
    err: str

    def assert_one_line_error(self) -> str:
        assert self.status != 0
        assert self.out == ""
        assert "Traceback" not in self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


async def tickstream(*args: str, cwd: Path, **env: str) -> Run:
    """Run the console script with only the given settings in its environment.

    An asyncio subprocess, so servers running in this test's loop keep serving meanwhile.
    """
    environment = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(cwd), **env}
    process = await asyncio.create_subprocess_exec(
        str(TICKSTREAM),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        cwd=cwd,  # away from any developer's .env
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_no_redis_and_no_token_is_one_clear_line(tmp_path: Path) -> None:
    port = closed_port()
    run = await tickstream(
        "profile", cwd=tmp_path, REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0"
    )
    line = run.assert_one_line_error()
    assert line.startswith("tickstream profile: no Upstox token")
    assert f"Redis at 127.0.0.1:{port} is unreachable" in line
    assert "UPSTOX_ACCESS_TOKEN" in line
    assert "hunter2" not in run.err


async def test_nobody_logged_in_is_one_clear_line(tmp_path: Path, redis_url: str) -> None:
    run = await tickstream("history", "NSE_INDEX|Nifty 50", cwd=tmp_path, REDIS_URL=redis_url)
    assert "nobody is logged in" in run.assert_one_line_error()


async def test_an_encrypted_session_without_the_key_is_explained(
    tmp_path: Path, redis_url: str, redis_client: aioredis.Redis
) -> None:
    store = SessionStore(redis_client, Fernet.generate_key().decode())
    await store.save(Profile(user_id="AB1234"), SECRET_TOKEN)
    run = await tickstream("profile", cwd=tmp_path, REDIS_URL=redis_url)
    assert "TOKEN_ENCRYPTION_KEY is not set" in run.assert_one_line_error()


async def test_a_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    run = await tickstream("holidays", cwd=tmp_path, TOKEN_ENCRYPTION_KEY="not-a-key")
    assert run.status == 2
    assert "TOKEN_ENCRYPTION_KEY" in run.assert_one_line_error()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-key"], "is not an instrument key"),
        (["NSE_EQ|INE002A01018", "--from", "2025-02-01", "--to", "2025-01-01"], "--from is after"),
        (["NSE_EQ|INE002A01018", "--intraday", "--to", "2025-01-01"], "--intraday takes no"),
        (["NSE_EQ|INE002A01018", "--interval", "0"], "--interval must be"),
    ],
)
async def test_history_checks_its_arguments_first(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = await tickstream("history", *args, cwd=tmp_path, UPSTOX_ACCESS_TOKEN=SECRET_TOKEN)
    assert message in run.assert_one_line_error()


async def test_upstox_unreachable_is_one_line_without_the_token(
    tmp_path: Path, redis_url: str
) -> None:
    run = await tickstream(
        "profile",
        cwd=tmp_path,
        REDIS_URL=redis_url,
        UPSTOX_ACCESS_TOKEN=SECRET_TOKEN,
        UPSTOX_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        UPSTOX_TIMEOUT_SECONDS="2",
    )
    line = run.assert_one_line_error()
    assert line.startswith("tickstream profile: Upstox: cannot reach")
    assert SECRET_TOKEN not in run.err
