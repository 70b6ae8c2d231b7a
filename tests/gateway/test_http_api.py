"""The gateway's HTTP side: instruments, candles and holidays (the simulator as Upstox), status,
health, metrics and the dashboard page."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from shared import redis_contract as rc
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.gateway.conftest import NIFTY, GatewayHandle, StartGateway, client, running_gateway
from tests.support.simulator import SimulatorHandle, simulator  # noqa: F401

USER = "GW0001"


def http(gateway: GatewayHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.http_url, timeout=15)


# ---- instruments --------------------------------------------------------------------------


async def test_instrument_search_over_the_simulator_universe(gateway: GatewayHandle) -> None:
    async with http(gateway) as h:
        found = (await h.get("/api/instruments", params={"q": "reliance"})).json()
        first = found["instruments"][0]
        assert first["instrument_key"] == "NSE_EQ|INE002A01018"
        assert first["trading_symbol"] == "RELIANCE" and first["segment"] == "NSE_EQ"
        assert "base_price" not in first  # the simulator's model parameters stay private
        by_name = (await h.get("/api/instruments", params={"q": "HDFC BANK"})).json()
        assert by_name["instruments"][0]["name"].upper().startswith("HDFC BANK")
        nifty = (await h.get("/api/instruments", params={"q": "nifty", "limit": 3})).json()
        assert nifty["count"] == 3 and nifty["matched"] > 3
        assert nifty["instruments"][0]["instrument_key"] == NIFTY  # exact symbol first
        options = (await h.get("/api/instruments", params={"q": "nifty", "limit": 500})).json()
        assert any(i["instrument_type"] == "CE" and i["expiry"] for i in options["instruments"])
        none = (await h.get("/api/instruments", params={"q": "zzzz-no-such"})).json()
        assert none == {"instruments": [], "count": 0, "matched": 0}
        assert (await h.get("/api/instruments", params={"limit": 0})).status_code == 422


async def test_instrument_master_file(start_gateway: StartGateway, tmp_path: Path) -> None:
    master = [
        {
            "instrument_key": "NSE_FO|45450",
            "trading_symbol": "NIFTY 27 FEB 22500 CE",
            "name": "NIFTY",
            "segment": "NSE_FO",
            "exchange": "NSE",
            "instrument_type": "CE",
            "expiry": 1740681000000,  # epoch ms, as Upstox writes it
            "strike_price": 22500.0,
            "lot_size": 75,
        },
        {"instrument_key": "not a key", "trading_symbol": "JUNK"},
    ]
    path = tmp_path / "complete.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(master)))
    gateway = await start_gateway(gateway_instruments_source=str(path))
    async with http(gateway) as h:
        body = (await h.get("/api/instruments", params={"q": "22500"})).json()
    assert body["count"] == 1
    record = body["instruments"][0]
    assert record["instrument_key"] == "NSE_FO|45450" and record["expiry"] == "2025-02-28"
    broken = await start_gateway(gateway_instruments_source=str(tmp_path / "missing.json"))
    async with http(broken) as h:
        response = await h.get("/api/instruments", params={"q": "x"})
    assert response.status_code == 503
    assert response.json()["error"] == "instruments_unavailable"
    assert str(tmp_path) not in response.text


# ---- candles and holidays -----------------------------------------------------------------


@pytest.fixture
async def upstream_gateway(
    start_gateway: StartGateway,
    simulator: SimulatorHandle,  # noqa: F811
) -> GatewayHandle:
    return await start_gateway(upstox_base_url=simulator.http_url)


async def test_history_needs_a_login(upstream_gateway: GatewayHandle) -> None:
    async with http(upstream_gateway) as h:
        response = await h.get(f"/api/history/{NIFTY}")
    assert response.status_code == 401
    assert response.json()["error"] == "not_logged_in"


async def test_history_and_holidays_with_the_active_session(
    upstream_gateway: GatewayHandle,
    redis_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    async with http(upstream_gateway) as h:
        today = (await h.get("/api/history/NSE_INDEX%7CNifty%2050")).json()
        assert today["key"] == NIFTY and today["unit"] == "minutes" and today["interval"] == 1
        rows = today["candles"]
        assert all(len(row) == 7 for row in rows)
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # oldest first
        longer = (
            await h.get(
                f"/api/history/{NIFTY}", params={"days": 5, "unit": "minutes", "interval": 30}
            )
        ).json()
        assert len(longer["candles"]) > 0
        assert [r[0] for r in longer["candles"]] == sorted(r[0] for r in longer["candles"])
        holidays = (await h.get("/api/holidays")).json()
        assert isinstance(holidays["holidays"], list)
        for bad, code in (
            ("/api/history/nope", "bad_key"),
            (f"/api/history/{NIFTY}?unit=eons", "bad_unit"),
        ):
            response = await h.get(bad)
            assert response.status_code == 400 and response.json()["error"] == code


async def test_a_refused_token_is_a_clear_401_that_does_not_leak_it(
    upstream_gateway: GatewayHandle,
    redis_client: aioredis.Redis,
    simulator: SimulatorHandle,  # noqa: F811
) -> None:
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token=simulator.demo_token)
    await simulator.expire_tokens()
    async with http(upstream_gateway) as h:
        response = await h.get(f"/api/history/{NIFTY}")
    assert response.status_code == 401
    assert response.json()["error"] == "upstox_auth"
    assert simulator.demo_token not in response.text


async def test_upstox_unreachable_is_a_clear_error(
    start_gateway: StartGateway,
    redis_client: aioredis.Redis,
) -> None:
    from shared.ports import free_port

    gateway = await start_gateway(
        upstox_base_url=f"http://127.0.0.1:{free_port()}", upstox_timeout_seconds=2
    )
    await SessionStore(redis_client).save(Profile(user_id=USER), access_token="secret-token-xyz")
    async with http(gateway) as h:
        response = await h.get("/api/holidays")
    assert response.status_code in (502, 503)
    assert response.json()["error"] == "upstox_unavailable"
    assert "secret-token-xyz" not in response.text


# ---- status, health, metrics --------------------------------------------------------------


async def test_status_health_and_metrics(
    gateway: GatewayHandle, redis_client: aioredis.Redis
) -> None:
    info = orjson.dumps(
        {
            "type": "market_info",
            "currentTs": "1",
            "marketInfo": {"segmentStatus": {"NSE_EQ": "NORMAL_OPEN"}},
        }
    )
    await redis_client.publish(rc.MARKET_INFO_EVENTS, info)
    status = rc.IngestorStatus(instance="i1", state="connected", epoch="E1")
    await redis_client.set(rc.INGESTOR_STATUS, status.model_dump_json())
    async with http(gateway) as h, client(gateway.ws_url) as c:
        await c.subscribe([NIFTY])
        await c.send("junk")
        await c.expect("error")
        body = (await h.get("/api/status")).json()
        assert body["replica"] == gateway.hub.replica_id
        assert body["redis"] == "up" and body["clients"] == 1
        assert body["channels"] == 1 and body["subscriptions"] == 1
        assert body["ingestor"]["state"] == "connected"
        assert body["marketInfo"] == {"segmentStatus": {"NSE_EQ": "NORMAL_OPEN"}}
        assert (await h.get("/healthz")).json() == {"status": "ok"}
        ready = await h.get("/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] == "up"
        metrics = (await h.get("/metrics")).text
    for line in (
        "tickstream_gateway_clients 1.0",
        "tickstream_gateway_channels 1.0",
        "tickstream_gateway_redis_up 1.0",
        'tickstream_gateway_client_errors_total{code="bad_json"} 1.0',
        "tickstream_gateway_feed_frames_total 1.0",
        "tickstream_gateway_updates_conflated_total 0.0",
        "tickstream_gateway_slow_clients_dropped_total 0.0",
    ):
        assert line in metrics.splitlines(), line
    for histogram in ("flush_seconds", "tick_lag_seconds"):
        assert f'tickstream_gateway_{histogram}_bucket{{le="+Inf"}}' in metrics


async def test_readyz_reports_redis_down(redis_url: str, redis_server) -> None:  # type: ignore[no-untyped-def]
    async with running_gateway(redis_url) as gateway, http(gateway) as h:
        redis_server.stop()
        try:
            response = await h.get("/readyz")
            assert response.status_code == 503 and response.json()["redis"] == "down"
            assert (await h.get("/healthz")).status_code == 200
        finally:
            redis_server.start()


# ---- the page -----------------------------------------------------------------------------


async def test_dashboard_page_and_assets_carry_the_security_policy(gateway: GatewayHandle) -> None:
    async with http(gateway) as h:
        page = await h.get("/")
        asset = await h.get("/static/app.js")
        api = await h.get("/api/instruments", params={"q": "x"})
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert page.headers["cache-control"] == "no-cache"
    for response in (page, asset):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert asset.status_code == 200
    assert "content-security-policy" not in api.headers


async def test_placeholder_page_without_the_dashboard(redis_url: str, tmp_path: Path) -> None:
    from services.gateway.app import create_app, server_options
    from services.gateway.settings import GatewaySettings
    from tests.support.servers import running_server

    settings = GatewaySettings(redis_url=redis_url)
    app = create_app(settings, static_dir=tmp_path / "absent")
    async with (
        running_server(app, **server_options(settings)) as server,
        httpx.AsyncClient(base_url=server.http_url) as h,
    ):
        page = await h.get("/")
        missing = await h.get("/static/app.js")
    assert page.status_code == 200 and "/ws" in page.text
    assert "content-security-policy" in page.headers
    assert missing.status_code == 404
