"""Persistence benchmark: what Redis's AOF would cost the tick path, at the benchmarks' rates.

    .venv/bin/python -m bench.persistence [--rates 15000,50000,max] [--duration 10]

Why: a login must survive a Redis crash. Redis's own answer is the append-only file
(`appendonly yes`, `appendfsync everysec`), but the same Redis carries the ingestor's
last-value SETs, thousands a second, and the AOF would log every one of them. This measures
that cost before choosing it (the answer, and the choice made, are in docs/architecture.md).

What runs: a fresh `redis-server` per run, configured either as compose's Redis is (`snapshots`:
no AOF, Redis's default RDB save points) or with `appendonly yes, appendfsync everysec` (`aof`),
driven by the ingestor's real `Publisher` (batched EVALs that PUBLISH each tick and SET its last
value, as in production) with ingestor-shaped payloads (an option_greeks value as the renderer
writes it plus our metadata, about 400 bytes) over --keys instruments. Each rate is paced in
5 ms steps; `max` submits as fast as the publisher drains. After --warmup seconds, --duration
seconds are measured:

- Redis's CPU: user + system time of the server and of its reaped children (AOF rewrites and
  RDB saves fork), from /proc/<pid>/stat, as a share of one core;
- bytes Redis wrote per second (`wchar` in /proc/<pid>/io: the AOF's appends; the replies to
  the publisher are a few bytes per 2000 ticks) and the growth of its data directory;
- forks (AOF rewrites or snapshots) during the window, from INFO;
- ticks per second Redis acknowledged (the publisher's own count).

Every process shares the machine's cores; the report says how many.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.fanout import CLK_TCK, wait_port
from services.ingestor.processor import FrameResult, Tick
from services.ingestor.publisher import Publisher
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.ports import free_port
from shared.redis_client import connect_redis
from shared.redis_link import RedisLink
from shared.upstox.backoff import Backoff

CONFIGS: dict[str, list[str]] = {
    # compose's Redis: a volume, Redis's default save points, no AOF
    "snapshots": ["--appendonly", "no"],
    "aof": ["--appendonly", "yes", "--appendfsync", "everysec"],
}
STEP = 0.005  # pacing step, seconds
MAX_BACKLOG = 4000  # `max`: keep this many ticks waiting, like the ingestor's reader does

# An option_greeks value as the renderer writes it (captured shape), price and time filled in.
VALUE = (
    b'{"firstLevelWithGreeks":{"ltpc":{"ltp":%.2f,"ltt":"%d","ltq":"75","cp":212.4},'
    b'"firstDepth":{"bidQ":"1425","bidP":%.2f,"askQ":"900","askP":%.2f},'
    b'"optionGreeks":{"delta":0.5123,"theta":-12.8841,"gamma":0.0008,"vega":11.2374,'
    b'"rho":2.4411},"vtt":"18236475","oi":4512300.0,"iv":0.1432,"tbq":48929.0,'
    b'"tsq":36381.0,"atp":211.86}}'
)


@dataclass
class Sample:
    at: float
    cpu: float  # seconds: the server and its reaped children
    written: int  # bytes the server wrote (wchar)
    disk: int  # bytes in its data directory
    forks: int
    published: int


@dataclass
class Result:
    config: str
    rate: str
    ticks_per_second: float
    cpu_share: float
    written_per_second: float
    disk_per_second: float
    forks: int

    def row(self) -> str:
        return (
            f"| {self.config} | {self.rate} | {self.ticks_per_second:,.0f} | "
            f"{self.cpu_share:.0%} | {self.written_per_second / 1e6:.1f} | "
            f"{self.disk_per_second / 1e6:.1f} | {self.forks} |"
        )


class Source:
    """Ticks for `keys` in full mode, each payload fresh (price, time, sequence)."""

    def __init__(self, count: int) -> None:
        keys = [f"NSE_FO|{45000 + i}" for i in range(count)]
        mode = Mode.OPTION_GREEKS
        self._names = [
            (rc.tick_channel(mode, key).encode(), rc.last_value_key(mode, key).encode())
            for key in keys
        ]
        self._seq = 0
        self._epoch = os.urandom(6).hex()

    def ticks(self, count: int) -> list[Tick]:
        now_ms = time.time_ns() // 1_000_000
        out: list[Tick] = []
        names = self._names
        for _ in range(count):
            self._seq += 1
            channel, last = names[self._seq % len(names)]
            price = 200.0 + (self._seq % 97) * 0.05
            value = VALUE % (price, now_ms, price - 0.05, price + 0.05)
            tick = rc.encode_tick(value, self._seq, self._epoch, now_ms)
            out.append((channel, last, tick, b""))
        return out


def payload_size(source: Source) -> int:
    return len(source.ticks(1)[0][2])


def sample(pid: int, data: Path, info: dict[str, object], published: int) -> Sample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK
    written = 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                written = int(line.split()[1])
    disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    forks = int(str(info.get("total_forks", 0)))
    return Sample(time.monotonic(), cpu, written, disk, forks, published)


async def drive(publisher: Publisher, source: Source, rate: float | None, stop: float) -> None:
    """Submit ticks at `rate` a second (None: as fast as they drain) until `stop` (monotonic)."""
    started = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < stop:
        if rate is None:
            count = max(0, MAX_BACKLOG - publisher.backlog)
            count = min(count, 2000)
        else:
            count = int(rate * (now - started)) - sent
        if count > 0:
            ticks = source.ticks(count)
            sent += count
            publisher.submit(FrameResult(ticks=ticks, feeds=count, ts=time.time_ns() // 1_000_000))
        await asyncio.sleep(STEP if rate is not None else 0)


@contextlib.contextmanager
def redis_server(binary: str, config: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """A fresh `redis-server` in `config` with its own data directory, removed afterwards."""
    data = Path(tempfile.mkdtemp(prefix=f"bench-persistence-{config}-"))
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--protected-mode", "no", *CONFIGS[config]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        yield server, data, port
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


async def run_one(
    binary: str, config: str, rate_name: str, args: argparse.Namespace, source: Source
) -> Result:
    rate = None if rate_name == "max" else float(rate_name)
    with redis_server(binary, config) as (server, data, port):
        link = RedisLink(connect_redis(f"redis://127.0.0.1:{port}/0"), Backoff())
        publisher = Publisher(
            link,
            last_value_ttl=7 * 24 * 3600,  # the ingestor's default
            max_pending=1_000_000,
            latest=list,
            latest_market_info=lambda: None,
        )
        task = asyncio.create_task(publisher.run())
        begin = time.monotonic()
        driver = asyncio.create_task(
            drive(publisher, source, rate, begin + args.warmup + args.duration)
        )
        await asyncio.sleep(args.warmup)
        first = sample(server.pid, data, await link.client.info("stats"), publisher.published)
        await driver
        last = sample(server.pid, data, await link.client.info("stats"), publisher.published)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.client.aclose()
    seconds = last.at - first.at
    return Result(
        config=config,
        rate=rate_name if rate is None else f"{rate:,.0f}/s",
        ticks_per_second=(last.published - first.published) / seconds,
        cpu_share=(last.cpu - first.cpu) / seconds,
        written_per_second=(last.written - first.written) / seconds,
        disk_per_second=(last.disk - first.disk) / seconds,
        forks=last.forks - first.forks,
    )


async def bench(args: argparse.Namespace) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.stderr.write("bench.persistence needs redis-server on PATH\n")
        return 2
    source = Source(args.keys)
    results: list[Result] = []
    for rate in args.rates.split(","):
        for config in CONFIGS:
            result = await run_one(binary, config, rate.strip(), args, source)
            sys.stderr.write(f"{result.row()}\n")
            results.append(result)
    out = [
        f"{args.keys} keys, {payload_size(source)}-byte payloads, {args.duration:.0f} s measured "
        f"after {args.warmup:.0f} s, {os.cpu_count()} cores shared by everything",
        "",
        "| Redis | offered | ticks/s acknowledged | Redis CPU (one core) | written MB/s | "
        "data dir growth MB/s | forks |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(result.row() for result in results),
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.persistence", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="15000,50000,max", help="ticks/s, comma separated")
    parser.add_argument("--keys", type=int, default=1500, help="instruments (last-value keys)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    return asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
