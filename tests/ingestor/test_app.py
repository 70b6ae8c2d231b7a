"""The ingestor's HTTP side under real uvicorn: health, readiness, metrics, the CLI entry."""

from __future__ import annotations

import argparse

import httpx
import pytest
import redis.asyncio as aioredis

from services.cli import main
from services.ingestor import command
from services.ingestor.app import create_app
from services.ingestor.settings import IngestorSettings
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.ingestor.conftest import FAST, USER
from tests.support.servers import running_server
from tests.support.simulator import SimulatorHandle
from tests.support.waiting import eventually


async def test_health_readiness_and_metrics(
    simulator: SimulatorHandle, redis_url: str, redis_client: aioredis.Redis
) -> None:
    settings = IngestorSettings(
        redis_url=redis_url, upstox_base_url=simulator.http_url, ingestor_instance_id="web", **FAST
    )
    async with (
        running_server(create_app(settings)) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json()["instance"] == "web"

        # Active but without a token: alive, not ready.
        await eventually(lambda: _state(http, "waiting_token"), "the ingestor waiting for a token")
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["reason"] == "waiting_token"

        await SessionStore(redis_client).save(
            Profile(user_id=USER), access_token=simulator.demo_token
        )
        await eventually(lambda: _ready(http), "ready once connected")
        ready = (await http.get("/readyz")).json()
        assert ready["active"] and ready["upstream"] and ready["redis"]

        metrics = (await http.get("/metrics")).text
        for name in (
            "tickstream_ingestor_frames_total",
            "tickstream_ingestor_feeds_total",
            "tickstream_ingestor_published_total",
            "tickstream_ingestor_decode_errors_total",
            'tickstream_ingestor_state{state="connected"} 1.0',
            "tickstream_ingestor_upstream_connected 1.0",
            "tickstream_ingestor_upstream_reconnects_total",
            'tickstream_ingestor_subscribed_keys{mode="full"}',
            "tickstream_ingestor_lag_seconds_bucket",
            "tickstream_ingestor_redis_errors_total",
        ):
            assert name in metrics, name
        # Neither the token nor a one-time feed URL ever shows up here.
        assert simulator.demo_token not in metrics and "code=" not in metrics
    assert "code=" not in health.text


async def _state(http: httpx.AsyncClient, state: str) -> bool:
    return bool((await http.get("/healthz")).json()["state"] == state)


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


def test_the_cli_knows_the_ingestor(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ingestor", "--help"])
    assert exit_info.value.code == 0
    assert "--port" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert parser.parse_args([]).port == 8002
