"""A real first snapshot on a fresh stack: the first client to subscribe a key nobody has
streamed yet gets the key's value in its `initial_feed`, not an empty one followed by a
`live_feed` (the upstream's own snapshot of the key arrives after the subscribe).

The whole `tickstream dev` topology as processes, one gateway, the client through the front.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)

KEYS = ["NSE_EQ|INE002A01018", "NSE_INDEX|Nifty Bank"]
# Only an upper bound (the default is 2000 ms); a loaded machine must not make the test flaky.
WAIT_MS = "10000"


@pytest.fixture(scope="module")
def fresh_stack() -> Iterator[Stack]:
    with running_stack(gateways=1, overrides={"GATEWAY_FIRST_VALUE_WAIT_MS": WAIT_MS}) as stack:
        yield stack


async def ingestor_connected(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        status: dict[str, Any] = (await http.get(f"{stack.front_url}/api/status")).json()
    return status.get("ingestorState") == "connected" and status.get("channels") == 0


async def test_the_first_subscriber_gets_the_keys_value_in_its_initial_feed(
    fresh_stack: Stack,
) -> None:
    await eventually(lambda: ingestor_connected(fresh_stack), "the ingestor upstream", 120)
    feeds: list[dict[str, Any]] = []
    async with connect(fresh_stack.front_ws_url, open_timeout=10, proxy=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "keys": KEYS, "mode": "ltpc", "id": "s"}))
        first_seen: dict[str, str] = {}  # key -> the type of the first feed frame carrying it
        while set(first_seen) != set(KEYS):
            frame = json.loads(await ws.recv())
            if frame["type"] in ("initial_feed", "live_feed"):
                feeds.append(frame)
                for key in frame["feeds"]:
                    first_seen.setdefault(key, frame["type"])
    assert first_seen == dict.fromkeys(KEYS, "initial_feed"), feeds
    assert feeds[0]["type"] == "initial_feed" and feeds[0]["feeds"], "an empty snapshot first"
    for frame in feeds:
        for key, value in frame["feeds"].items():
            assert value["ltpc"]["ltp"] > 0 and frame["meta"][key]["seq"] >= 1
