"""Ingest benchmark: the simulator in full mode -> ingestor -> Redis, against the SDK's way.

    .venv/bin/python -m bench.ingest [--keys 1500] [--sim-tick-ms 50] [--duration 10]

What runs, each in its own process: a Redis server, the simulator (`tickstream simulator`,
--keys instruments subscribed in full mode, each ticking every --sim-tick-ms), and the consumer
under test:

- `tickstream`: the real ingestor (`tickstream ingestor`): decode once, render each feed once
  (`shared.render`), stamp, and publish + SET the last value in batched script calls;
- `sdk`: the same frames handled the way Upstox's Python SDK hands them to users: the frame
  through `MessageToDict`, each feed through `json.dumps`, then one awaited `PUBLISH` per feed
  (redis-py), on the same channels.

Each consumer is measured over --duration seconds after --warmup: feeds processed (the
ingestor's `tickstream_ingestor_feeds_total`, the SDK consumer's own count), its CPU time from
/proc (user + system), hence feeds per CPU-second, and latency from the frame's `currentTs`
(the simulator stamps it when it builds the frame, i.e. exchange time) to the moment a Redis
subscriber in this process receives the tick, for a sample of channels. All processes share the
machine's cores; the report says how many there are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from bench.fanout import process, tickstream, usage, wait_http
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.ports import free_port
from shared.sessions import SessionStore
from shared.upstox.models import Profile
from tests.support.redis_server import LocalRedisServer

TOKEN = "bench-ingest-demo-token"
ADMIN_KEY = "bench-ingest-admin"
USER = "BENCH01"
SAMPLE_CHANNELS = 20
QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
# The ingestor's own histograms: frame currentTs -> Redis ack, frame received -> Redis ack.
HISTOGRAMS = ("lag", "processing")


def instrument_keys(count: int) -> list[str]:
    """Listed option keys (the simulator streams nothing for others): full mode carries depth,
    OHLC and greeks for them."""
    from services.simulator.universe import universe

    keys = [i.instrument_key for i in universe() if i.is_option]
    if count > len(keys):
        raise SystemExit(f"--keys {count}: the simulator lists {len(keys)} options")
    return keys[:count]


# ---- the SDK-style consumer (run as a child process: --sdk-consumer) --------------------------


async def sdk_consumer(base_url: str, redis_url: str, keys: list[str], stats_path: Path) -> None:
    """Upstox's SDK way: MessageToDict(frame), json.dumps per feed, one PUBLISH each."""
    from google.protobuf.json_format import MessageToDict
    from websockets.asyncio.client import connect

    from shared.proto import pb

    redis: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    async with httpx.AsyncClient(base_url=base_url) as http:
        answer = await http.get(
            "/v3/feed/market-data-feed/authorize", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    url = answer.json()["data"]["authorized_redirect_uri"]
    counts = {"frames": 0, "feeds": 0, "published": 0}
    last_write = 0.0
    async with connect(url, compression=None, max_size=None) as ws:
        request = {"guid": "sdk", "method": "sub", "data": {"mode": "full", "instrumentKeys": keys}}
        await ws.send(orjson.dumps(request))
        async for message in ws:
            frame = MessageToDict(pb.FeedResponse.FromString(message))  # type: ignore[arg-type]
            counts["frames"] += 1
            ts = int(frame.get("currentTs", 0))
            for key, feed in frame.get("feeds", {}).items():
                payload = rc.encode_tick(json.dumps(feed).encode(), 0, "sdk", ts)
                await redis.publish(rc.tick_channel(Mode.FULL, key), payload)
                counts["feeds"] += 1
                counts["published"] += 1
            now = time.monotonic()
            if now - last_write > 0.25:
                last_write = now
                tmp = stats_path.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(counts))
                tmp.replace(stats_path)


# ---- measurement -------------------------------------------------------------------------------


class LatencySampler:
    """Subscribes to a few tick channels; records now - meta.ts (ms) per message."""

    def __init__(self, redis_url: str, channels: list[str]) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
        self._channels = channels
        self.samples: list[float] = []
        self.recording = False
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*self._channels)
        self._task = asyncio.create_task(self._run(pubsub))

    async def _run(self, pubsub: Any) -> None:
        try:
            while not self._stop:
                message = await pubsub.get_message(timeout=0.2)
                if message is None or not self.recording:
                    continue
                _, meta = rc.split_tick(message["data"])
                ts = orjson.loads(meta)["ts"]
                if ts:
                    self.samples.append(time.time() * 1000.0 - ts)
        finally:
            await pubsub.aclose()

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        await self._client.aclose()


def quantiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    found = {name: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for name, q in QUANTILES}
    found["max"] = ordered[-1]
    return found


def ingestor_metrics(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tickstream_ingestor_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            found[name.removeprefix("tickstream_ingestor_").removesuffix("_total")] = float(value)
        else:
            for histogram in HISTOGRAMS:
                if line.startswith(f"tickstream_ingestor_{histogram}_seconds_bucket"):
                    name, value = line.rsplit(" ", 1)
                    bound = name.split('le="')[1].rstrip('"}')
                    found[f"{histogram}_le_{bound}"] = float(value)
    return found


def bucket_quantile(
    before: dict[str, float], after: dict[str, float], histogram: str, q: float
) -> str:
    """Upper bound (ms) of the ingestor's histogram bucket holding quantile q of the window."""
    prefix = f"{histogram}_le_"
    buckets = sorted(
        (float(k.removeprefix(prefix)), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix)
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "-"
    for bound, count in buckets:
        if count >= q * total:
            return "<= %g" % (bound * 1000) if bound != float("inf") else "> 10000"
    return "-"


@dataclass
class Result:
    name: str
    seconds: float
    feeds: float
    published: float
    cpu: float
    latency: dict[str, float]
    skipped_frames: int
    histograms: dict[str, dict[str, str]]

    @property
    def feeds_per_cpu_second(self) -> float:
        return self.feeds / self.cpu if self.cpu else 0.0


async def sim_stats(sim_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as http:
        answer = await http.get("/admin/stats", headers={"X-Admin-Key": ADMIN_KEY})
    data: dict[str, Any] = answer.json()["data"]
    return data


async def wait_subscribed(sim_url: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        conns = (await sim_stats(sim_url))["connections"]
        if conns and len(conns[0]["subscriptions"]) >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the consumer never subscribed its keys")


def skipped(stats: dict[str, Any]) -> int:
    return sum(int(conn["frames_skipped"]) for conn in stats["connections"])


async def measure(
    name: str,
    pid: int,
    counters: Any,
    sim_url: str,
    redis_url: str,
    keys: list[str],
    args: argparse.Namespace,
    histograms: bool = False,
) -> Result:
    await wait_subscribed(sim_url, len(keys))
    channels = [
        rc.tick_channel(Mode.FULL, key) for key in keys[:: max(1, len(keys) // SAMPLE_CHANNELS)]
    ]
    sampler = LatencySampler(redis_url, channels[:SAMPLE_CHANNELS])
    await sampler.start()
    await asyncio.sleep(args.warmup)
    c0, u0, s0, t0 = counters(), usage(pid), await sim_stats(sim_url), time.monotonic()
    sampler.recording = True
    await asyncio.sleep(args.duration)
    sampler.recording = False
    c1, u1, s1, t1 = counters(), usage(pid), await sim_stats(sim_url), time.monotonic()
    await sampler.stop()
    found: dict[str, dict[str, str]] = {}
    if histograms:
        for histogram in HISTOGRAMS:
            found[histogram] = {
                label: bucket_quantile(c0, c1, histogram, q) for label, q in QUANTILES
            }
    return Result(
        name=name,
        seconds=t1 - t0,
        feeds=c1["feeds"] - c0["feeds"],
        published=c1["published"] - c0["published"],
        cpu=u1.cpu_seconds - u0.cpu_seconds,
        latency=quantiles(sampler.samples),
        skipped_frames=skipped(s1) - skipped(s0),
        histograms=found,
    )


# ---- the same frames, replayed in this process ---------------------------------------------------


async def capture_frames(sim_url: str, keys: list[str], count: int) -> list[bytes]:
    """`count` feed frames of the simulator (full mode, every key), as raw bytes."""
    from websockets.asyncio.client import connect

    from shared.proto import pb

    async with httpx.AsyncClient(base_url=sim_url) as http:
        answer = await http.get(
            "/v3/feed/market-data-feed/authorize", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    url = answer.json()["data"]["authorized_redirect_uri"]
    frames: list[bytes] = []
    async with connect(url, compression=None, max_size=None) as ws:
        request = {"guid": "cap", "method": "sub", "data": {"mode": "full", "instrumentKeys": keys}}
        await ws.send(orjson.dumps(request))
        async for message in ws:
            assert isinstance(message, bytes)
            if pb.FeedResponse.FromString(message).feeds:
                frames.append(message)
            if len(frames) >= count:
                break
    return frames


@dataclass
class ReplayResult:
    name: str
    feeds: int
    cpu: float
    wall: float


async def replay_tickstream(
    redis_url: str, keys: list[str], frames: list[bytes], wire: str
) -> ReplayResult:
    """The ingestor's own path: processor (decode, render, stamp) and publisher, real Redis."""
    from services.ingestor.processor import PART_FEEDS, TickProcessor
    from services.ingestor.publisher import Publisher
    from shared.redis_client import connect_redis
    from shared.redis_link import RedisLink
    from shared.upstox.backoff import Backoff

    link = RedisLink(connect_redis(redis_url), Backoff())
    processor = TickProcessor()
    ticks, entries = wanted(wire)
    processor.set_render({key: ticks for key in keys}, {key: entries for key in keys})
    publisher = Publisher(
        link,
        last_value_ttl=7 * 24 * 3600,
        max_pending=1_000_000,
        latest=processor.latest,
        latest_market_info=lambda: processor.market_info,
    )
    task = asyncio.create_task(publisher.run())
    feeds = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for frame in frames:
        for part in processor.process_parts(frame, PART_FEEDS):
            feeds += part.feeds
            publisher.submit(part)
            await asyncio.sleep(0)
    await publisher.idle()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await link.client.aclose()
    return ReplayResult("tickstream (processor + publisher)", feeds, cpu, wall)


def replay_render_only(frames: list[bytes]) -> ReplayResult:
    """For scale: decode and `shared.render.project` alone, the floor under the ingestor."""
    from shared.render import decode_frame, project

    feeds = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for message in frames:
        for feed in decode_frame(message).feeds.values():
            project(feed, Mode.FULL)
            feeds += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return ReplayResult("of which decode + render alone (shared.render)", feeds, cpu, wall)


async def replay_sdk(redis_url: str, frames: list[bytes]) -> ReplayResult:
    """MessageToDict of the frame, json.dumps per feed, one awaited PUBLISH each (redis-py)."""
    from google.protobuf.json_format import MessageToDict

    from shared.proto import pb

    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    feeds = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for message in frames:
        frame = MessageToDict(pb.FeedResponse.FromString(message))
        for key, feed in frame.get("feeds", {}).items():
            await client.publish(rc.tick_channel(Mode.FULL, key), json.dumps(feed))
            feeds += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    return ReplayResult("Upstox SDK way", feeds, cpu, wall)


def replay_report(results: list[ReplayResult], frames: list[bytes]) -> str:
    feeds = results[0].feeds if results else 0
    rows = [
        f"The same {len(frames)} captured frames ({feeds:,} full-mode feeds, "
        f"{sum(map(len, frames)) / max(1, len(frames)) / 1024:,.0f} KiB a frame) replayed in "
        "this process to the same Redis; CPU time of this process (Redis server excluded):",
        "",
        "| path | feeds per CPU-second | CPU us per feed | feeds/s (wall) |",
        "|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} | {r.feeds / r.cpu:,.0f} | {r.cpu / r.feeds * 1e6:.1f} | "
            f"{r.feeds / r.wall:,.0f} |"
        )
    if len(results) >= 2:
        ratio = (results[0].feeds / results[0].cpu) / (results[1].feeds / results[1].cpu)
        rows.append("")
        rows.append(f"feeds per CPU-second, tickstream / SDK way: {ratio:.1f}x")
    return "\n".join(rows)


WIRES = ("json", "upstox", "both")


def wanted(wire: str) -> rc.WireModes:
    """Full mode on the wire(s) the consumer is asked for by `--wire`."""
    full = frozenset({Mode.FULL})
    none: frozenset[Mode] = frozenset()
    return rc.WireModes(full if wire != "upstox" else none, full if wire != "json" else none)


async def seed(redis_url: str, keys: list[str], wire: str) -> None:
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    try:
        await SessionStore(client).save(Profile(user_id=USER), access_token=TOKEN)
        table = {key: rc.encode_demand(wanted(wire)) for key in keys}
        await client.hset(rc.demand_key("bench"), mapping=table)  # type: ignore[arg-type]
        # The ingestor finds demand through the registry: a replica whose lease lapses in a year.
        lapses = int((time.time() + 365 * 86400) * 1000)
        await client.zadd(rc.DEMAND_REGISTRY, {"bench": lapses})
    finally:
        await client.aclose()


async def run_tickstream(
    sim_url: str, redis_url: str, keys: list[str], args: argparse.Namespace
) -> Result:
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "UPSTOX_BASE_URL": sim_url,
        "LOG_LEVEL": "WARNING",
        "INGESTOR_MODE_LIMITS": json.dumps({"full": len(keys)}),
        "INGESTOR_RECORD": "false" if args.no_record else "true",
    }
    with process(tickstream("ingestor", "--port", str(port)), env, "ingestor") as proc:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_http, f"{base}/readyz", 120)

        def counters() -> dict[str, float]:
            return ingestor_metrics(base)

        return await measure(
            "tickstream ingestor", proc.pid, counters, sim_url, redis_url, keys, args,
            histograms=True,
        )  # fmt: skip


async def run_sdk(
    sim_url: str, redis_url: str, keys: list[str], args: argparse.Namespace
) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        stats = Path(tmp) / "sdk.json"
        keys_file = Path(tmp) / "keys.json"
        keys_file.write_bytes(orjson.dumps(keys))
        command = [
            sys.executable, "-m", "bench.ingest", "--sdk-consumer",
            "--sdk-sim-url", sim_url, "--sdk-redis-url", redis_url,
            "--sdk-keys", str(keys_file), "--sdk-stats", str(stats),
        ]  # fmt: skip
        with process(command, {}, "sdk-consumer") as proc:

            def counters() -> dict[str, float]:
                try:
                    data: dict[str, float] = orjson.loads(stats.read_bytes())
                except (FileNotFoundError, orjson.JSONDecodeError):
                    data = {"feeds": 0, "published": 0}
                return data

            return await measure(
                "Upstox SDK way", proc.pid, counters, sim_url, redis_url, keys, args
            )


def report(results: list[Result], args: argparse.Namespace, cores: int) -> str:
    rows = [
        f"{args.keys} keys in full mode (wire: {args.wire}, record stream: "
        f"{'off' if args.no_record else 'on'}), one tick per key every "
        f"{args.sim_tick_ms:g} ms "
        f"(offered {args.keys * 1000 / args.sim_tick_ms:,.0f} feeds/s); {args.duration:g} s "
        f"measured after {args.warmup:g} s; {cores} cores shared by Redis, the simulator, the "
        "consumer and this process",
        "",
        "| consumer | feeds/s | CPU cores used | feeds per CPU-second | "
        "latency p50 / p90 / p99 / max (ms) | frames the simulator skipped |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r.latency
        latency = " / ".join(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")) if lat else "-"
        rows.append(
            f"| {r.name} | {r.feeds / r.seconds:,.0f} | {r.cpu / r.seconds:.2f} | "
            f"{r.feeds_per_cpu_second:,.0f} | {latency} | {r.skipped_frames} |"
        )
    titles = {
        "lag": "frame currentTs -> Redis acknowledged",
        "processing": "frame received -> Redis acknowledged",
    }
    for r in results:
        for histogram, values in r.histograms.items():
            rows.append("")
            rows.append(
                f"{r.name}, its own {histogram} histogram ({titles[histogram]}), bucket upper "
                "bounds in ms: " + ", ".join(f"{k} {v}" for k, v in values.items())
            )
    if len(results) == 2 and results[1].feeds_per_cpu_second:
        ratio = results[0].feeds_per_cpu_second / results[1].feeds_per_cpu_second
        rows.append("")
        rows.append(f"feeds per CPU-second, tickstream / SDK way: {ratio:.1f}x")
    return "\n".join(rows)


async def bench(args: argparse.Namespace) -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.stderr.write("bench.ingest needs redis-server on PATH\n")
        return 2
    redis = LocalRedisServer(binary)
    redis.start()
    keys = instrument_keys(args.keys)
    sim_port = free_port()
    sim_env = {
        "SIMULATOR_DEMO_TOKEN": TOKEN,
        "SIMULATOR_ADMIN_KEY": ADMIN_KEY,
        "SIMULATOR_TICK_INTERVAL_MS": str(args.sim_tick_ms),
        "SIMULATOR_LIMIT_FULL": str(max(2000, args.keys)),
        "LOG_LEVEL": "WARNING",
    }
    results: list[Result] = []
    replay_text = ""
    try:
        with process(tickstream("simulator", "--port", str(sim_port)), sim_env, "simulator"):
            sim_url = f"http://127.0.0.1:{sim_port}"
            await asyncio.to_thread(wait_http, f"{sim_url}/healthz", 120)
            await seed(redis.url, keys, args.wire)
            if args.replay_frames:
                frames = await capture_frames(sim_url, keys, args.replay_frames)
                replayed = [
                    await replay_tickstream(redis.url, keys, frames, args.wire),
                    await replay_sdk(redis.url, frames),
                    replay_render_only(frames),
                ]
                replay_text = replay_report(replayed, frames)
            if args.consumer in ("both", "tickstream"):
                results.append(await run_tickstream(sim_url, redis.url, keys, args))
            if args.consumer in ("both", "sdk"):
                results.append(await run_sdk(sim_url, redis.url, keys, args))
    finally:
        redis.cleanup()
    text = report(results, args, os.cpu_count() or 1) if results else ""
    if replay_text:
        text = f"{replay_text}\n\nEnd to end:\n\n{text}" if text else replay_text
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_bytes(
            orjson.dumps([r.__dict__ for r in results], option=orjson.OPT_INDENT_2)
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1500, help="instruments, all in full mode")
    parser.add_argument("--sim-tick-ms", type=float, default=50.0, help="per-key tick period")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--consumer", choices=("both", "tickstream", "sdk", "none"), default="both")
    parser.add_argument(
        "--wire",
        choices=WIRES,
        default="json",
        help="what the ingestor is asked for: JSON ticks, Upstox's protobuf entries, or both",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="the ingestor appends no frames to the record stream (INGESTOR_RECORD=false)",
    )
    parser.add_argument(
        "--replay-frames", type=int, default=100, help="frames captured and replayed (0: skip)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    # The SDK-style consumer's own process.
    parser.add_argument("--sdk-consumer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-sim-url", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-keys", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sdk-stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sdk_consumer:
        keys = orjson.loads(args.sdk_keys.read_bytes())
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(sdk_consumer(args.sdk_sim_url, args.sdk_redis_url, keys, args.sdk_stats))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
