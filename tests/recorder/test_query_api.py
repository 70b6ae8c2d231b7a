"""The query routes through a real server on port 0 over real files: answers, bounds and the
400s that name what was wrong."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.recorder.api import router
from services.recorder.gaps import Gap
from services.recorder.store import Store
from shared.ist import IST
from shared.recording import GAPS
from shared.token_bucket import BucketTable
from tests.recorder.test_query import KEY, OPEN, at, tick, write
from tests.support.servers import running_server

DAY_START = "2026-12-04T00:00:00+05:30"
DAY_END = "2026-12-05T00:00:00+05:30"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    app.state.recording_root = tmp_path
    async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        yield http


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> tuple[int, Any]:
    response = await client.get(path, params=params)
    return response.status_code, response.json()


async def test_ticks_and_candles_over_http(tmp_path: Path, client: httpx.AsyncClient) -> None:
    write(
        tmp_path,
        [
            tick(at(0), 100.0, 0, volume=10, bid=99.5, bid_qty=3, ask=100.5, ask_qty=4),
            # a partial tick: the recorder carried bid and ask over from the row before
            tick(at(0.5), 102.0, 1, volume=15, bid=99.5, bid_qty=3, ask=100.5, ask_qty=4),
            tick(at(1), 101.0, 2, volume=30),
        ],
    )

    status, body = await get(client, f"/api/ticks/{KEY}", **{"from": DAY_START, "to": DAY_END})
    assert status == 200
    assert body["key"] == KEY and body["truncated"] is False
    assert [(t["ltp"], t["bid"], t["ask"]) for t in body["ticks"]] == [
        (100.0, 99.5, 100.5),
        (102.0, 99.5, 100.5),
        (101.0, None, None),
    ]

    start_ms = str(int(OPEN.timestamp() * 1000))  # epoch ms works as well as ISO 8601
    status, body = await get(client, f"/api/ticks/{KEY}", **{"from": start_ms, "limit": 2})
    assert status == 200 and body["truncated"] is True and len(body["ticks"]) == 2

    status, body = await get(
        client, f"/api/candles/{KEY}", interval="1m", **{"from": DAY_START, "to": DAY_END}
    )
    assert status == 200
    assert body == {
        "key": KEY,
        "interval": "1m",
        "candles": [
            ["2026-12-04T09:15:00+05:30", 100.0, 102.0, 100.0, 102.0, 5, 0],
            ["2026-12-04T09:16:00+05:30", 101.0, 101.0, 101.0, 101.0, 15, 0],
        ],
    }


async def test_empty_recording_is_empty_data(client: httpx.AsyncClient) -> None:
    assert await get(client, f"/api/ticks/{KEY}") == (
        200,
        {"key": KEY, "ticks": [], "truncated": False},
    )
    status, body = await get(client, f"/api/candles/{KEY}", interval="5s")
    assert (status, body["candles"]) == (200, [])


@pytest.mark.parametrize(
    ("path", "params", "code", "words"),
    [
        ("/api/candles/NSE_EQ|X", {"interval": "7x"}, "bad_interval", "1d"),
        ("/api/candles/NSE_EQ|X", {"interval": "2d"}, "bad_interval", "<n>m"),
        ("/api/candles/NSE_EQ|X", {"from": "yesterday"}, "bad_time", "ISO 8601"),
        ("/api/ticks/NSE_EQ|X", {"to": "2026-13-01"}, "bad_time", "epoch ms"),
        ("/api/ticks/NSE_EQ|X", {"from": DAY_END, "to": DAY_START}, "bad_time", "before"),
        ("/api/ticks/NSE_EQ|X", {"from": "2026-10-01", "to": DAY_END}, "bad_time", "31 days"),
        ("/api/ticks/NSE_EQ|X", {"limit": "100001"}, "bad_limit", "100000"),
        ("/api/ticks/not-a-key", {}, "bad_key", "SEGMENT|IDENTIFIER"),
        ("/api/candles/FOO|bar", {}, "bad_key", "SEGMENT|IDENTIFIER"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    client: httpx.AsyncClient, path: str, params: dict[str, str], code: str, words: str
) -> None:
    status, body = await get(client, path, **params)
    assert status == 400
    assert body["error"] == code
    assert words in body["message"]


async def test_without_a_recording_the_routes_answer_503() -> None:
    app = FastAPI()
    app.include_router(router)
    async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get(f"/api/candles/{KEY}")
    assert response.status_code == 503
    assert response.json()["error"] == "no_recording"


def test_ist_naive_times_are_ist() -> None:
    from services.recorder.api import parse_time

    assert parse_time("2026-12-04T09:15") == OPEN
    assert parse_time("2026-12-04") == dt.datetime(2026, 12, 4, tzinfo=IST)


async def test_gaps_found_by_the_recorder_are_reported_in_range(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    def gap(n: int, before: dt.datetime) -> Gap:
        ms = int(before.timestamp() * 1000)
        return Gap("ingestor-0", n, n + 4, 3, ms, ms + 2000, f"{ms}-0", f"{ms + 2000}-0")

    Store(tmp_path).append_gaps([gap(10, at(0)), gap(50, at(120))])
    with (tmp_path / GAPS).open("a") as cut:
        cut.write('{"instance": "cut sh')  # a crash mid-append
    status, body = await get(client, "/api/recording/gaps", **{"from": DAY_START, "to": DAY_END})
    assert status == 200
    assert [(g["from_n"], g["missing"]) for g in body["gaps"]] == [(10, 3), (50, 3)]
    assert body["gaps"][0]["from"].endswith("+05:30")
    late = (at(60)).isoformat()
    status, body = await get(client, "/api/recording/gaps", **{"from": late, "to": DAY_END})
    assert [g["from_n"] for g in body["gaps"]] == [50]
    status, body = await get(client, "/api/recording/gaps", **{"from": "yesterday"})
    assert status == 400 and body["error"] == "bad_time"


async def test_a_viewer_over_its_queries_a_minute_gets_429(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.recording_root = tmp_path
    app.state.query_limits = BucketTable(3)
    async with running_server(app) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        answers = [await http.get(f"/api/ticks/{KEY}") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        refused = await http.get("/api/recording/gaps")
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
