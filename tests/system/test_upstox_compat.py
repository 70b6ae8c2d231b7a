"""Tools written for Upstox's V3 feed, pointed at tickstream: Upstox's own SDK
(`MarketDataStreamerV3`, in a virtualenv of its own) and a plain `websockets` client following
Upstox's documented steps, against the whole `tickstream dev` topology through the front.

The SDK connects to a fixed `wss://api.upstox.com/...`; its probe changes only that host (by
wrapping `websocket.WebSocketApp`, which the SDK looks up when it connects): everything else,
the bearer handshake, the redirect, the requests and the decoding, is the SDK's own code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from shared.proto import pb
from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(600)

EQUITY, OPTION, INDEX = "NSE_EQ|INE002A01018", "NSE_FO|735771", "NSE_INDEX|Nifty Bank"
# mode -> the keys asked for in it and the `Feed` branch each must arrive in
MODES: dict[str, tuple[list[str], str]] = {
    "ltpc": ([EQUITY, OPTION, INDEX], "ltpc"),
    "full": ([EQUITY, OPTION, INDEX], "fullFeed"),
    "option_greeks": ([EQUITY, OPTION], "firstLevelWithGreeks"),
    "full_d30": ([EQUITY], "fullFeed"),
}
BEARER = {"Authorization": "Bearer any-viewer"}  # the stack's viewers are open: any bearer

PROBE = r"""
import json, sys, threading
import websocket
import upstox_client
from upstox_client.feeder.market_data_streamer_v3 import MarketDataStreamerV3

base, mode, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
original = websocket.WebSocketApp

def pointed(url, *args, **kwargs):
    return original(url.replace("wss://api.upstox.com", base), *args, **kwargs)

websocket.WebSocketApp = pointed
configuration = upstox_client.Configuration()
configuration.access_token = "any-viewer"
streamer = MarketDataStreamerV3(upstox_client.ApiClient(configuration), keys, mode)
seen = set()
done = threading.Event()

def on_message(message):
    print(json.dumps(message), flush=True)
    seen.update(message.get("feeds", {}))
    if seen >= set(keys):
        done.set()

streamer.on("message", on_message)
streamer.on("error", lambda error: print(json.dumps({"error": str(error)}), flush=True))
streamer.connect()
done.wait(90)
streamer.disconnect()
sys.exit(0 if done.is_set() else 1)
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as stack:
        yield stack


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with Upstox's SDK from the package index (skips when it cannot be had)."""
    venv = tmp_path_factory.mktemp("upstox-sdk") / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "upstox-python-sdk"]
        subprocess.run(pip, check=True, timeout=300, capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        pytest.skip(f"upstox-python-sdk could not be installed from the package index: {error}")
    return venv / "bin" / "python"


async def ingestor_connected(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        status: dict[str, Any] = (await http.get(f"{stack.front_url}/api/status")).json()
    return status.get("ingestorState") == "connected"


async def authorize(stack: Stack, headers: dict[str, str] = BEARER) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.get(
            f"{stack.front_url}/v3/feed/market-data-feed/authorize", headers=headers
        )


async def test_authorize_answers_a_single_use_url_and_refuses_in_upstoxs_envelope(
    stack: Stack,
) -> None:
    refused = await authorize(stack, {})
    assert refused.status_code == 200  # open viewers: no bearer is needed either
    answer = (await authorize(stack)).json()
    assert answer["status"] == "success"
    url = answer["data"]["authorizedRedirectUri"]
    assert url == answer["data"]["authorized_redirect_uri"]
    host = stack.front_url.removeprefix("http://")
    assert url.startswith(f"ws://{host}/v3/feed/market-data-feed/stream?code=")
    async with connect(url, open_timeout=10, proxy=None) as ws:
        await ws.close()
    with pytest.raises(InvalidStatus) as spent:
        async with connect(url, open_timeout=10, proxy=None):
            pass
    assert spent.value.response.status_code == 403
    body = json.loads(bytes(spent.value.response.body or b""))
    assert body["status"] == "error" and body["errors"][0]["errorCode"]


def feed_request(mode: str, method: str, keys: list[str]) -> bytes:
    """An Upstox feed request, sent as binary JSON as Upstox documents."""
    data: dict[str, Any] = {"instrumentKeys": keys}
    if method != "unsub":
        data["mode"] = mode
    return json.dumps({"guid": f"{method}-{mode}", "method": method, "data": data}).encode()


async def test_a_plain_client_following_upstoxs_steps_gets_every_mode(stack: Stack) -> None:
    await eventually(lambda: ingestor_connected(stack), "the ingestor upstream", 120)
    url = (await authorize(stack)).json()["data"]["authorizedRedirectUri"]
    async with connect(url, open_timeout=10, proxy=None) as ws:
        first = pb.FeedResponse.FromString(await ws.recv(decode=False))
        assert first.type == pb.market_info and first.marketInfo.segmentStatus
        for mode, (keys, branch) in MODES.items():
            await ws.send(feed_request(mode, "sub", keys))
            arrived: dict[str, str] = {}
            types: list[int] = []
            while set(arrived) != set(keys):
                frame = pb.FeedResponse.FromString(await ws.recv(decode=False))
                types.append(frame.type)
                for key, feed in frame.feeds.items():
                    if key in keys:
                        arrived[key] = str(feed.WhichOneof("FeedUnion"))
            assert arrived == dict.fromkeys(keys, branch), mode
            assert types[0] == pb.initial_feed, mode
            await ws.send(feed_request(mode, "unsub", keys))
            await in_flight_read(ws)


async def in_flight_read(ws: ClientConnection) -> None:
    """Read the frames sent before an `unsub` took effect (Upstox acknowledges none, and a
    frame may be on its way while the request is): until a second passes without one. Frames
    that never stop mean the `unsub` was not heeded."""
    async with asyncio.timeout(30):
        while True:
            try:
                async with asyncio.timeout(1.0):
                    await ws.recv(decode=False)
            except TimeoutError:
                return


@pytest.mark.parametrize("mode", list(MODES))
async def test_upstoxs_sdk_streams_every_key_in_every_mode(
    stack: Stack, sdk_python: Path, tmp_path: Path, mode: str
) -> None:
    """Through the front (which follows the gateway's redirect itself, as a proxy may)."""
    await eventually(lambda: ingestor_connected(stack), "the ingestor upstream", 120)
    await run_sdk(stack.front_url, sdk_python, tmp_path, mode)


async def test_upstoxs_sdk_follows_the_gateways_redirect(
    stack: Stack, sdk_python: Path, tmp_path: Path
) -> None:
    """Straight at a gateway: the SDK's own client follows the 302 to the one-time URL."""
    await eventually(lambda: ingestor_connected(stack), "the ingestor upstream", 120)
    await run_sdk(stack.gateway_urls[0], sdk_python, tmp_path, "full")


async def run_sdk(http_base: str, sdk_python: Path, tmp_path: Path, mode: str) -> None:
    """Run the SDK's streamer on `mode`'s keys; every key must arrive in its branch."""
    keys, branch = MODES[mode]
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    base = http_base.replace("http://", "ws://")
    process = await asyncio.create_subprocess_exec(
        str(sdk_python),
        str(probe),
        base,
        mode,
        ",".join(keys),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 150)
    messages = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode == 0, (messages[-5:], err.decode()[-2000:])
    assert messages[0].get("type") == "market_info", messages[:2]
    arrived: dict[str, str] = {}
    for message in messages:
        for key, feed in message.get("feeds", {}).items():
            arrived[key] = next(name for name in feed if name != "requestMode")
            if mode == "full_d30":
                assert feed.get("requestMode") == "full_d30"
    assert arrived == dict.fromkeys(keys, branch)
