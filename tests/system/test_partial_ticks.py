"""Partial ticks through the whole system: clients get them as Upstox sends them, snapshots whole.

The simulator (defaults: partial ticks on) shows a new book once a second while the stack ticks
every 100 ms, so most live values of an equity in full mode leave `marketLevel` out. A client
that asks for a snapshot right after such a value, and a client that subscribes meanwhile, must
get the whole value: the book, the candles and the price.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from tests.support.stack import Stack

RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
ROUNDS = 15
WAIT = 60.0  # an upper bound for any one frame; nothing here is timed


async def frame_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if frame.get("type") == kind:
                return frame


async def partial_live_value(ws: ClientConnection) -> None:
    """Read live frames until one carries the equity without its book (a partial value)."""
    while True:
        frame = await frame_of(ws, "live_feed")
        value = frame["feeds"].get(RELIANCE)
        if value is not None and "marketLevel" not in value["fullFeed"]["marketFF"]:
            assert frame["meta"][RELIANCE]["partial"] is True
            return


def assert_whole(frame: dict[str, Any]) -> None:
    market = frame["feeds"][RELIANCE]["fullFeed"]["marketFF"]
    assert len(market["marketLevel"]["bidAskQuote"]) == 5
    assert {c["interval"] for c in market["marketOHLC"]["ohlc"]} == {"1d", "I1"}
    assert market["ltpc"]["ltp"] > 0 and int(market["vtt"]) > 0
    assert "partial" not in frame["meta"][RELIANCE]
    index = frame["feeds"][NIFTY]["fullFeed"]["indexFF"]
    assert index["ltpc"]["ltp"] > 0 and index["marketOHLC"]["ohlc"]


async def subscribed(stack: Stack) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(stack.front_ws_url, origin=Origin(stack.front_url))
    request = {"op": "subscribe", "keys": [RELIANCE, NIFTY], "mode": "full"}
    await ws.send(orjson.dumps(request).decode())
    return ws, await frame_of(ws, "initial_feed")


async def test_snapshots_taken_between_partial_ticks_are_whole(whole_stack: Stack) -> None:
    watcher, _ = await subscribed(whole_stack)
    try:
        for _ in range(ROUNDS):
            await partial_live_value(watcher)  # the channel's newest update is partial
            await watcher.send(orjson.dumps({"op": "snapshot"}).decode())
            assert_whole(await frame_of(watcher, "initial_feed"))
            newcomer, snapshot = await subscribed(whole_stack)  # a first snapshot meanwhile
            await newcomer.close()
            assert_whole(snapshot)
    finally:
        await watcher.close()
