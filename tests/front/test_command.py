"""`tickstream front` as a process: it serves, and its log lines keep query strings out."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.front.routes import HEALTH_PATH
from shared.ports import free_port
from tests.front.test_proxy import Upstream, dead_url, upstream_app
from tests.support.servers import running_server


async def test_front_command_relays_and_keeps_secrets_out_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "front.log"
    async with running_server(upstream_app(Upstream("gateway-1"))) as gateway:
        port = free_port()
        with log.open("w") as out:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "services.cli", "front", "--port", str(port)),
                *("--gateway", gateway.http_url, "--auth", dead_url()),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
                for _ in range(200):
                    try:
                        if (await http.get(base + HEALTH_PATH)).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                assert (await http.get(base + "/api/x")).json()["who"] == "gateway-1"
            # under the command's h11 the front sees an absolute-form target as sent, and refuses it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET http://elsewhere/api/x HTTP/1.1\r\n"
                b"Host: localhost\r\nConnection: close\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]
            url = f"ws://127.0.0.1:{port}/ws?api_key=very-secret-key"
            async with connect(url, proxy=None) as ws:
                assert "gateway-1" in str(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(InvalidStatus):
                async with connect(f"ws://127.0.0.1:{port}/ws-deny?api_key=other", proxy=None):
                    pass
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
    text = log.read_text()
    assert '"WebSocket /ws" [accepted]' in text  # the line is there, without its query
    assert "api_key" not in text
