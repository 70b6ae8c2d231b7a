"""shared.serve as a service runs it: forwarded-for headers are believed from the trusted
proxies only, so a client cannot choose the address it is rate-limited under."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from shared.ports import free_port
from shared.settings import CommonSettings, SettingsError, load_settings


@asynccontextmanager
async def auth_process(redis_url: str, log: Path, **env: str) -> AsyncIterator[str]:
    port = free_port()
    settings = {"REDIS_URL": redis_url, "AUTH_AUTHORIZE_PER_MINUTE": "2", **env}
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "services.cli", "auth", "--port", str(port)),
            env={**os.environ, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            for _ in range(300):
                try:
                    if (await http.get(base + "/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def statuses(base: str) -> list[int]:
    """Three login starts, each claiming another client address."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return [
            (
                await http.get(base + "/authorize", headers={"X-Forwarded-For": f"198.51.100.{n}"})
            ).status_code
            for n in range(3)
        ]


@pytest.mark.parametrize(
    ("trusted", "third"),
    [
        ("192.0.2.1", 429),  # the test is no trusted proxy: its header is ignored
        # the test is the proxy: each claimed client has its own bucket, and, being no
        # operator, is refused after the rate check
        ("127.0.0.1", 401),
    ],
)
async def test_forwarded_for_is_believed_from_trusted_proxies_only(
    redis_url: str, tmp_path: Path, trusted: str, third: int
) -> None:
    async with auth_process(redis_url, tmp_path / "auth.log", TRUSTED_PROXIES=trusted) as base:
        found = await statuses(base)
    assert found[:2] == [401, 401] and found[2] == third, found


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, ::1,192.0.2.7")
    assert load_settings(CommonSettings).trusted_proxies == ["10.0.0.0/8", "::1", "192.0.2.7"]
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1,nginx")
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES") as caught:
        load_settings(CommonSettings)
    assert "'nginx' is not an IP address or network" in str(caught.value)
