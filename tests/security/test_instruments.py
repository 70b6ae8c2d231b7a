"""Only real instruments, through the running system (`tickstream dev`'s processes, the client
at the front).

Before: `subscribe` took any key of the right shape and the simulator streamed made-up data for
it, so one anonymous socket could fill Upstox's per-mode key limits (all 50 of `full_d30`) with
invented keys and real viewers were then `refused_by_upstream`. Now the gateway answers such
keys with `unknown_key` and they never reach the demand, so the ingestor never subscribes them
upstream (read from the simulator's admin stats: what the upstream connection holds).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)

NOSUCH = "NSE_FO|NOSUCH"
NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
INVENTED = [f"NSE_FO|{9_000_000 + n}" for n in range(50)]  # all of full_d30's 50, made up


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as running:
        yield running


async def ingestor_connected(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        status: dict[str, Any] = (await http.get(f"{stack.front_url}/api/status")).json()
    return status.get("ingestorState") == "connected"


async def upstream_keys(stack: Stack) -> dict[str, str]:
    """Every key the ingestor's upstream connection subscribes, with its mode."""
    stats = await stack.admin("stats", method="GET")
    found: dict[str, str] = {}
    for connection in stats["connections"]:
        found.update(connection["subscriptions"])
    return found


async def answers(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """The error and ack frames answering `request_id`, up to its ack or a ping's pong."""
    await ws.send(json.dumps({"op": "ping", "id": f"{request_id}-done"}))
    found: list[dict[str, Any]] = []
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "pong" and frame.get("id") == f"{request_id}-done":
            return found
        if frame.get("type") in ("error", "ack") and frame.get("id") == request_id:
            found.append(frame)


async def test_an_invented_key_is_unknown_and_never_subscribed_upstream(stack: Stack) -> None:
    await eventually(lambda: ingestor_connected(stack), "the ingestor upstream", 120)
    async with connect(stack.front_ws_url, open_timeout=10, proxy=None) as ws:
        request = {"op": "subscribe", "keys": [NOSUCH, NIFTY], "mode": "full", "id": "s"}
        await ws.send(json.dumps(request))
        error, ack = await answers(ws, "s")
        assert error["code"] == "unknown_key" and error["keys"] == [NOSUCH]
        assert ack["type"] == "ack" and ack["keys"] == [NIFTY]
        await eventually(lambda: _has(upstream_keys(stack), NIFTY), "NIFTY subscribed upstream", 60)
        assert NOSUCH not in await upstream_keys(stack)


async def test_invented_keys_cannot_squat_the_full_d30_limit(stack: Stack) -> None:
    await eventually(lambda: ingestor_connected(stack), "the ingestor upstream", 120)
    async with (
        connect(stack.front_ws_url, open_timeout=10, proxy=None) as squatter,
        connect(stack.front_ws_url, open_timeout=10, proxy=None) as viewer,
    ):
        request = {"op": "subscribe", "keys": INVENTED, "mode": "full_d30", "id": "squat"}
        await squatter.send(json.dumps(request))
        [error] = await answers(squatter, "squat")
        assert error["code"] == "unknown_key" and error["keys"] == INVENTED
        # A real viewer's 30-level book is taken upstream, not refused.
        request = {"op": "subscribe", "keys": [RELIANCE], "mode": "full_d30", "id": "d30"}
        await viewer.send(json.dumps(request))
        [ack] = await answers(viewer, "d30")
        assert ack["type"] == "ack" and ack["keys"] == [RELIANCE]
        upstream = await eventually(
            lambda: _has(upstream_keys(stack), RELIANCE), "RELIANCE subscribed upstream", 60
        )
        assert upstream[RELIANCE] == "full_d30"
        assert not set(INVENTED) & set(upstream)
        while True:  # its book streams: no refused_by_upstream comes first
            frame = json.loads(await viewer.recv())
            assert frame.get("code") != "refused_by_upstream", frame
            if frame.get("type") in ("initial_feed", "live_feed") and RELIANCE in frame["feeds"]:
                book = frame["feeds"][RELIANCE]["fullFeed"]["marketFF"]["marketLevel"]
                assert len(book["bidAskQuote"]) == 30
                break


async def _has(keys: Any, key: str) -> dict[str, str] | None:
    found: dict[str, str] = await keys
    return found if key in found else None
