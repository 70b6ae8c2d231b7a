"""The recorder as a real process, SIGKILLed while frames keep coming, then restarted: the files
hold every frame exactly once, in stream order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from shared.ports import free_port
from tests.recorder.conftest import add_frame, recorded_ids
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def recorder_process(redis_url: str, root: Path, port: int, log: Path) -> Iterator[int]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RECORDER_DIR": str(root),
        "RECORDER_FLUSH_SECONDS": "0.3",
        "RECORDER_FLUSH_FRAMES": "50",
    }
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "recorder", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


async def _healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


async def test_sigkill_and_restart_record_every_frame_once_in_order(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    log = tmp_path / "recorder.log"
    added: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            added.append(await add_frame(redis_client, "ing-a", n))
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    try:
        port = free_port()
        with recorder_process(redis_url, root, port, log) as pid:
            await eventually(lambda: _healthy(port), "the recorder ready", within=60)
            await eventually(lambda: len(recorded_ids(root)) > 100, "frames recorded")
            os.kill(pid, signal.SIGKILL)
        written_before = len(recorded_ids(root))
        await asyncio.sleep(2)  # frames keep coming while it is dead
        assert len(added) > written_before
        port = free_port()
        with recorder_process(redis_url, root, port, log):
            await eventually(lambda: _healthy(port), "the recorder ready again", within=60)
            await asyncio.sleep(0.5)
            stop.set()
            await producer
            await eventually(
                lambda: len(recorded_ids(root)) >= len(added), "every frame recorded", within=60
            )
            ids = recorded_ids(root)
            assert len(ids) == len(set(ids)), "a frame recorded twice"
            assert ids == added
            assert not (root / "gaps.jsonl").exists()
    finally:
        stop.set()
        await producer
