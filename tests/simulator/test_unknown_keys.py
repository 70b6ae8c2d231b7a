"""Keys that are not listed: the simulator, like Upstox, streams nothing for them (no error, no
`initial_feed` entry, no `live_feed` entry) and answers its REST calls for them as for an
invalid instrument key. A real simulator, a real WebSocket."""

from __future__ import annotations

from urllib.parse import quote

import websockets

from shared.proto import pb
from tests.simulator.helpers import (
    assert_error,
    authorized_url,
    barrier,
    frame_of_type,
    get,
    next_frame,
    send,
)
from tests.support.simulator import SimulatorHandle

NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
TCS = "NSE_EQ|INE467B01029"
UNKNOWN = ("NSE_FO|NOSUCH", "NSE_EQ|INE999Z01011", "BSE_INDEX|Made Up", "NSE_FO|99999999")


async def test_a_sub_naming_unknown_keys_streams_only_the_real_ones(
    simulator: SimulatorHandle,
) -> None:
    async with websockets.connect(await authorized_url(simulator, simulator.demo_token)) as ws:
        await frame_of_type(ws, pb.market_info)
        await send(ws, "sub", [NIFTY, *UNKNOWN, RELIANCE], "full")
        snapshot = await frame_of_type(ws, pb.initial_feed)
        assert set(snapshot.feeds) == {NIFTY, RELIANCE}
        for _ in range(5):
            live = await frame_of_type(ws, pb.live_feed)
            assert set(live.feeds) == {NIFTY, RELIANCE}
        # A sub of unknown keys alone: nothing at all (the next snapshot is the marker's).
        await send(ws, "sub", ["NSE_FO|NOSUCH2"], "full_d30")
        await barrier(ws, TCS)
        for _ in range(3):
            frame = await next_frame(ws)
            assert not set(frame.feeds) & {"NSE_FO|NOSUCH2", *UNKNOWN}
        # Upstox sends no error either: the sub is taken, it just never has data.
        [connection] = (await simulator.stats())["connections"]
        assert "NSE_FO|NOSUCH" in connection["subscriptions"]


async def test_rest_answers_an_unknown_key_as_an_invalid_instrument_key(
    simulator: SimulatorHandle,
) -> None:
    token = simulator.demo_token
    for key in UNKNOWN:
        path = quote(key, safe="")
        assert_error(
            await get(simulator, f"/v3/historical-candle/intraday/{path}/minutes/1", token),
            400,
            "UDAPI100011",
        )
        assert_error(
            await get(simulator, f"/v3/historical-candle/{path}/days/1/2025-03-31", token),
            400,
            "UDAPI100011",
        )
    listed = quote(RELIANCE, safe="")
    response = await get(simulator, f"/v3/historical-candle/intraday/{listed}/minutes/1", token)
    assert response.status_code == 200
