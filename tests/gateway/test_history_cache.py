"""/api/history without burning Upstox's quota: two real replicas, the simulator as Upstox
counting every candle request it gets, a real Redis between them."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from services.gateway.history import chart_parts, merge_rows
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.gateway.conftest import NIFTY, GatewayHandle, StartGateway, eventually
from tests.support.simulator import SimulatorHandle, simulator  # noqa: F401

USER = "GW0001"
VIEWERS = 24  # concurrent requests for one chart, spread over the replicas


def http(gateway: GatewayHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.http_url, timeout=30, trust_env=False)


@pytest.fixture
async def replicas(
    start_gateway: StartGateway,
    simulator: SimulatorHandle,  # noqa: F811
    redis_client: aioredis.Redis,
) -> list[GatewayHandle]:
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    return [await start_gateway(upstox_base_url=simulator.http_url) for _ in range(2)]


async def candle_requests(simulator: SimulatorHandle) -> int:  # noqa: F811
    return int((await simulator.stats())["candle_requests"])


async def open_chart_at_once(
    replicas: list[GatewayHandle], params: dict[str, Any] | None = None
) -> list[httpx.Response]:
    """VIEWERS requests for the same chart at the same moment, alternating replicas."""
    clients = [http(gateway) for gateway in replicas]
    try:
        return await asyncio.gather(
            *(
                clients[n % len(clients)].get(f"/api/history/{NIFTY}", params=params)
                for n in range(VIEWERS)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize(("days", "calls"), [(0, 1), (3, 2)])
async def test_many_viewers_of_one_chart_cost_one_upstox_call_per_part(
    replicas: list[GatewayHandle],
    simulator: SimulatorHandle,  # noqa: F811
    days: int,
    calls: int,
) -> None:
    before = await candle_requests(simulator)
    answers = await open_chart_at_once(replicas, {"days": days, "interval": 30})
    assert [a.status_code for a in answers] == [200] * VIEWERS, answers[0].text
    bodies = {a.text for a in answers}
    assert len(bodies) == 1 and '"candles":[[' in bodies.pop()
    assert await candle_requests(simulator) - before == calls  # today's, and the past days'
    again = await open_chart_at_once(replicas, {"days": days, "interval": 30})
    assert all(a.status_code == 200 for a in again)
    assert await candle_requests(simulator) - before == calls  # all from the cache
    async with http(replicas[0]) as h:
        metrics = (await h.get("/metrics")).text
    assert "tickstream_gateway_history_cache_hits_total" in metrics


async def test_an_upstox_error_is_shared_briefly_and_not_served_once_it_clears(
    replicas: list[GatewayHandle],
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    await simulator.admin("POST", "candle-fault", status=400)
    before = await candle_requests(simulator)
    failing = await open_chart_at_once(replicas)
    assert {a.json()["error"] for a in failing} == {"upstox_refused"}
    assert await candle_requests(simulator) - before == 1
    await simulator.admin("POST", "candle-fault", status=0)

    async def charted() -> bool:
        async with http(replicas[1]) as h:
            return (await h.get(f"/api/history/{NIFTY}")).status_code == 200

    await eventually(charted, "the chart once Upstox answers again", within=10)


async def test_a_refused_token_is_never_served_after_a_new_login(
    replicas: list[GatewayHandle],
    simulator: SimulatorHandle,  # noqa: F811
    redis_client: aioredis.Redis,
) -> None:
    await simulator.expire_tokens()
    before = await candle_requests(simulator)
    refused = await open_chart_at_once(replicas)
    assert {a.json()["error"] for a in refused} == {"upstox_auth"}
    assert await candle_requests(simulator) - before == 1
    assert simulator.demo_token not in refused[0].text
    fresh = (await simulator.login())["access_token"]
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=fresh)
    async with http(replicas[0]) as h:
        answer = await h.get(f"/api/history/{NIFTY}")
    assert answer.status_code == 200, answer.text  # at once: the old login's 401 is not reused


async def test_each_viewer_is_limited_cached_answers_included(
    start_gateway: StartGateway,
    simulator: SimulatorHandle,  # noqa: F811
    redis_client: aioredis.Redis,
) -> None:
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    gateway = await start_gateway(upstox_base_url=simulator.http_url, gateway_history_per_minute=3)
    async with http(gateway) as h:
        statuses = [(await h.get(f"/api/history/{NIFTY}")).status_code for _ in range(3)]
        over = await h.get(f"/api/history/{NIFTY}")
        metrics = (await h.get("/metrics")).text
    assert statuses == [200, 200, 200]
    assert over.status_code == 429 and over.json()["error"] == "rate_limited"
    assert int(over.headers["Retry-After"]) >= 1
    assert "tickstream_gateway_history_rate_limited_total 1.0" in metrics


async def test_an_unlisted_key_never_reaches_upstox(
    replicas: list[GatewayHandle],
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    before = await candle_requests(simulator)
    async with http(replicas[0]) as h:
        answer = await h.get("/api/history/NSE_FO|NOSUCH")
        listed = await h.get(f"/api/history/{NIFTY}")
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_key"
    assert listed.status_code == 200
    assert await candle_requests(simulator) == before + 1  # the listed key's one call only


def test_a_chart_is_today_and_the_past_days_before_it() -> None:
    today = dt.date(2026, 12, 4)
    past, intraday = chart_parts(NIFTY, "minutes", 30, 3, today, 30_000)
    assert (past.first, past.last) == (dt.date(2026, 12, 1), dt.date(2026, 12, 3))
    assert intraday.first is None and intraday.span == "intraday:2026-12-04"
    assert intraday.ttl_ms == 30_000 < past.ttl_ms
    assert past.cache_key != intraday.cache_key and past.lock_key != past.cache_key
    assert [p.span for p in chart_parts(NIFTY, "days", 1, 0, today, 1)] == ["intraday:2026-12-04"]
    a = ["2026-12-03T15:29:00+05:30", 1, 1, 1, 1, 0, 0]
    b = ["2026-12-04T09:15:00+05:30", 2, 2, 2, 2, 0, 0]
    assert merge_rows([[a], [b, a]]) == [a, b]
