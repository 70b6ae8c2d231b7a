"""The recorder in-process against a real Redis: frames XADDed as the ingestor does become files;
a jump in an instance's counter is a gap, a new instance is not."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from services.recorder.app import create_app
from services.recorder.gaps import GapDetector
from shared.recording import StreamFrame
from tests.recorder.conftest import (
    TICKS,
    RecorderFactory,
    add_frame,
    pending,
    recorded_ids,
    settings_for,
)
from tests.support.redis_server import ContainerRedisServer, LocalRedisServer
from tests.support.servers import running_server
from tests.support.waiting import eventually


def frame(instance: str, n: int) -> StreamFrame:
    return StreamFrame(f"{n}-0", n, instance, n, b"")


def test_detector_consecutive_and_failover_are_not_gaps() -> None:
    detector = GapDetector()
    found = [detector.observe(frame(i, n)) for i, n in [("a", 1), ("a", 2), ("b", 7), ("b", 8)]]
    assert found == [None, None, None, None]
    assert detector.observe(frame("a", 3)) is None  # back to a: its own count continues
    assert detector.observe(frame("a", 1)) is None  # a restarted: a new run


def test_detector_reports_a_jump() -> None:
    detector = GapDetector()
    detector.observe(frame("a", 4))
    gap = detector.observe(frame("a", 9))
    assert gap is not None
    assert (gap.from_n, gap.to_n, gap.missing, gap.before_id, gap.after_id) == (
        4,
        9,
        4,
        "4-0",
        "9-0",
    )


async def test_frames_added_before_the_recorder_ran_are_recorded(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory, tmp_path: Path
) -> None:
    ids = [await add_frame(redis_client, "ing-a", n) for n in range(1, 6)]
    recorder = await run_recorder()
    ids += [await add_frame(redis_client, "ing-a", n) for n in range(6, 11)]
    root = tmp_path / "rec"
    await eventually(lambda: recorded_ids(root) == ids, "every frame on disk")
    assert recorded_ids(root, TICKS) == ids  # one instrument per frame
    await eventually(lambda: recorder.frames_recorded == 10, "counted")

    async def all_acked() -> bool:
        return await pending(redis_client) == 0

    await eventually(all_acked, "every entry acknowledged")
    assert recorder.gaps == 0
    assert not (root / "gaps.jsonl").exists()


async def test_a_jump_is_a_gap_and_an_instance_change_is_not(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory, tmp_path: Path
) -> None:
    recorder = await run_recorder()
    ids = [await add_frame(redis_client, "ing-a", n) for n in (1, 2, 3)]
    ids += [await add_frame(redis_client, "ing-b", n) for n in (40, 41)]  # failover
    ids += [await add_frame(redis_client, "ing-b", n) for n in (45, 46)]  # 42..44 lost
    root = tmp_path / "rec"
    await eventually(lambda: recorded_ids(root) == ids, "every frame on disk")
    await eventually(lambda: recorder.gaps == 1, "one gap")
    lines = (root / "gaps.jsonl").read_text().splitlines()
    assert len(lines) == 1
    gap = json.loads(lines[0])
    assert (gap["instance"], gap["from_n"], gap["to_n"], gap["missing"]) == ("ing-b", 41, 45, 3)
    assert (gap["before_id"], gap["after_id"]) == (ids[4], ids[5])
    assert recorder.gap_frames == 3
    assert recorder.status().gaps == 1


async def test_status_is_published_with_a_ttl(
    redis_client: aioredis.Redis, run_recorder: RecorderFactory
) -> None:
    from shared import redis_contract as rc

    await run_recorder(recorder_consumer="rec-status")
    await add_frame(redis_client, "ing-a", 1)

    async def recording() -> rc.RecorderStatus | None:
        raw = await redis_client.get(rc.RECORDER_STATUS)
        if raw is None:
            return None
        status = rc.RecorderStatus.model_validate_json(raw)
        return status if status.state == "recording" and status.frames_recorded == 1 else None

    status = await eventually(recording, "status says recording")
    assert status.instance == "rec-status"
    assert status.lag_frames == 0
    assert 0 < await redis_client.pttl(rc.RECORDER_STATUS) <= 15_000


async def test_redis_down_then_back_with_its_data_lost(
    redis_server: LocalRedisServer | ContainerRedisServer,
    redis_url: str,
    run_recorder: RecorderFactory,
    tmp_path: Path,
) -> None:
    recorder = await run_recorder()
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    try:
        before = [await add_frame(client, "ing-a", n) for n in (1, 2)]
        root = tmp_path / "rec"
        await eventually(lambda: recorded_ids(root) == before, "recorded before the outage")
        redis_server.stop()
        try:
            await eventually(lambda: recorder.state == "redis_down", "redis_down")
            assert recorder.status().detail
        finally:
            redis_server.start()  # empty: the stream and its group are gone
        await eventually(lambda: recorder.state == "recording", "recording again")
        await client.aclose()
        client = aioredis.Redis.from_url(redis_url)  # the old connection died with the server
        after = [await add_frame(client, "ing-a", n) for n in (3, 4)]
        await eventually(lambda: recorded_ids(root) == before + after, "recorded after it")
    finally:
        await client.aclose()


async def test_http_status_and_metrics(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path / "rec")
    async with (
        running_server(create_app(settings)) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await eventually(lambda: _status_code(http, "/readyz", 200), "ready", within=30)

        async def recording() -> dict[str, object] | None:
            status: dict[str, object] = (await http.get("/status")).json()
            return status if status["state"] == "recording" else None

        status = await eventually(recording, "/status says recording")
        assert status["instance"] == "recorder-1"
        text = (await http.get("/metrics")).text
        for name in ("frames_total", "gaps_total", "gap_frames_total", "write_errors_total"):
            assert f"tickstream_recorder_{name} 0.0" in text
        assert (await http.get("/healthz")).status_code == 200


async def _status_code(http: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await http.get(path)).status_code == code
