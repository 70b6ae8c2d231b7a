"""Soak: the whole system at a moderate load for a few minutes, with steady memory.

Excluded from the default test command (marker `soak`). Run it alone:

    ./scripts/soak                       # or: .venv/bin/pytest -m soak tests/system/test_soak.py
    TICKSTREAM_SOAK_SECONDS=600 TICKSTREAM_SOAK_CLIENTS=100 ./scripts/soak

It samples every process's resident memory (VmRSS from /proc) and every client's update count,
asserts that each process's memory after the warm-up third stays within a bound of where it was
when the warm-up ended, that every client kept receiving updates in every interval, and that no
process died and no client was disconnected. The samples are written to
`test-artifacts/system/soak-report.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import statistics
from functools import partial
from pathlib import Path

import pytest

from tests.support.stack import ARTIFACTS, running_stack
from tests.system.feed import FeedClient

logger = logging.getLogger(__name__)

SECONDS = float(os.environ.get("TICKSTREAM_SOAK_SECONDS", "180"))
CLIENTS = int(os.environ.get("TICKSTREAM_SOAK_CLIENTS", "40"))
KEYS_PER_CLIENT = 10
SAMPLES = 18  # sampling intervals over the run
# Growth allowed after the warm-up: a fraction of the warm RSS plus a constant for allocator
# noise. A leak of a few KB per update blows through it within minutes.
GROWTH_FRACTION = 0.25
GROWTH_CONSTANT_KB = 24 * 1024

KEY_POOL = [
    "NSE_INDEX|Nifty 50",
    "NSE_INDEX|Nifty Bank",
    "NSE_EQ|INE002A01018",
    "NSE_EQ|INE467B01029",
    "NSE_EQ|INE040A01034",
    "NSE_EQ|INE009A01021",
    "NSE_EQ|INE090A01021",
    "NSE_EQ|INE062A01020",
    "NSE_EQ|INE030A01027",
    "NSE_EQ|INE154A01025",
    "NSE_EQ|INE018A01030",
    "NSE_EQ|INE238A01034",
    "NSE_EQ|INE397D01024",
    "NSE_EQ|INE585B01010",
    "NSE_EQ|INE075A01022",
    "NSE_EQ|INE021A01026",
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclasses.dataclass
class Sample:
    rss_kb: dict[str, int]
    updates: int


def has_updates(client: FeedClient) -> bool:
    return client.counted > 0


def client_keys(index: int) -> list[str]:
    return [KEY_POOL[(index + j) % len(KEY_POOL)] for j in range(KEYS_PER_CLIENT)]


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 600)
async def test_soak_steady_memory_and_flow() -> None:
    with running_stack(gateways=2) as stack:
        pids = stack.pids()
        async with contextlib.AsyncExitStack() as clients_stack:
            clients = [
                await clients_stack.enter_async_context(
                    FeedClient(
                        stack.front_ws_url,
                        client_keys(i),
                        mode="full" if i % 4 == 0 else "ltpc",
                        origin=stack.front_url,
                        record=False,
                    )
                )
                for i in range(CLIENTS)
            ]
            for client in clients:
                await client.wait_for(partial(has_updates, client), "first updates", 120)

            samples: list[Sample] = []
            previous = [c.counted for c in clients]
            for sample in range(SAMPLES):
                await asyncio.sleep(SECONDS / SAMPLES)
                counts = [c.counted for c in clients]
                rss = {name: rss_kb(pid) for name, pid in pids.items()}
                samples.append(Sample(rss, sum(counts)))
                logger.info("soak sample %d: %d updates, rss %s", sample, sum(counts), rss)
                stalled = [
                    i for i, (a, b) in enumerate(zip(previous, counts, strict=True)) if b <= a
                ]
                assert not stalled, f"clients {stalled} got nothing in sample {sample}"
                previous = counts
                assert not stack.unexpected_exits(), stack.unexpected_exits()

            assert [c.connections for c in clients] == [1] * CLIENTS  # nobody was dropped
        stack.assert_survivors(pids)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = [dataclasses.asdict(sample) for sample in samples]
    (ARTIFACTS / "soak-report.json").write_text(json.dumps(report, indent=1))
    warm = SAMPLES // 3
    growth = {}
    for name in pids:
        series = [sample.rss_kb[name] for sample in samples]
        baseline = series[warm - 1]
        final = statistics.median(series[-3:])
        growth[name] = (baseline, final)
        bound = baseline * (1 + GROWTH_FRACTION) + GROWTH_CONSTANT_KB
        assert final <= bound, f"{name}: RSS {baseline} kB after warm-up, {final} kB at the end"
    logger.info("soak RSS (kB) after warm-up -> end: %s", growth)
