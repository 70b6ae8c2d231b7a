"""Fan-out benchmark: N WebSocket clients x K keys each against one gateway process.

    .venv/bin/python -m bench.fanout --clients 5000 --keys 10 --universe 500 --rate 4

What runs, each in its own process: a Redis server (unless --redis-url), one gateway
(`tickstream gateway`), the tick source, and --client-procs client processes that each hold
many connections on one event loop (a minimal WebSocket client: handshake, unmasked frame
parsing, masked pongs; it parses only each frame's `meta` to count updates and latency).

Servers (--server): `gateway`, one `tickstream gateway`; `peer`, `bench.peer`, a per-message
fan-out in the usual Python design (FastAPI, one redis-py pub/sub, `await send_text` per client
per message), the baseline the gateway is measured against in the same harness.

Tick sources:
- `publisher` (default): writes ingestor-shaped payloads (values captured from the real
  renderer, the ingestor's SET + PUBLISH per tick) straight to Redis: every key of the universe
  ticks --rate times a second, in --spread batches per round;
- `simulator`: the real simulator (`--sim-tick-ms`) and the real ingestor, the whole data path.

Protocols (--protocol): `json`, our `/ws`; `upstox`, the Upstox-compatible feed (each client
authorizes over HTTP, then subscribes with Upstox's binary JSON request and counts the
`FeedResponse` entries it gets; the publisher writes protobuf `feeds` entries instead of JSON, as
the ingestor does next to its JSON). Latency comes from the publisher's clock in the meta
(`us`, microseconds: stamped as each tick is built) or from `ltpc.ltt` (upstox, and the
simulator's ticks: milliseconds), into 50 µs bins.

Phases: gateway RSS before any client; all clients connected and subscribed with no ticks
(idle memory per connection); then --warmup seconds of ticks and a --duration measurement
window: delivered instrument updates/s and frames/s (counted by the clients), tick->client
latency, the gateway's CPU (from /proc) and its counters (/metrics). `--shapes` runs the five
loads of `SHAPES` in turn (ticks in bursts of `--burst` keys) and prints a table of them.
Every process shares the machine's cores: the report says how many.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import orjson
from google.protobuf import json_format

from shared import redis_contract as rc
from shared.feed_frames import entry_bytes
from shared.instruments import Mode
from shared.ports import free_port
from shared.proto import pb

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_LATENCY_MS = 10_000
BIN_US = 50  # latency histogram resolution
BINS = MAX_LATENCY_MS * 1000 // BIN_US
QUANTILES = (("p50", 0.5), ("p99", 0.99))

# Values as the ingestor's renderer writes them (captured from a simulator + ingestor run).
LTPC_VALUE = b'{"ltpc":{"ltp":%.2f,"ltt":"%d","ltq":"4","cp":1530.65}}'
FULL_VALUE = (
    b'{"requestMode":"full_d5","fullFeed":{"marketFF":{"atp":1531.98,"vtt":"4710349",'
    b'"tbq":48929.0,"tsq":36381.0,"ltpc":{"ltp":%.2f,"ltt":"%d","ltq":"4","cp":1530.65},'
    b'"marketLevel":{"bidAskQuote":[{"bidQ":"117","bidP":1527.75,"askQ":"255","askP":1527.8},'
    b'{"bidQ":"378","bidP":1527.6,"askQ":"381","askP":1527.85},{"bidQ":"235","bidP":1527.5,'
    b'"askQ":"134","askP":1528.0},{"bidQ":"93","bidP":1527.45,"askQ":"43","askP":1528.15},'
    b'{"bidQ":"305","bidP":1527.4,"askQ":"293","askP":1528.25}]},"marketOHLC":{"ohlc":['
    b'{"interval":"1d","open":1530.3,"high":1542.65,"low":1527.15,"close":1527.8,'
    b'"vol":"4710349","ts":"1795458600000"},{"interval":"I1","open":1528.1,"high":1528.55,'
    b'"low":1527.25,"close":1527.45,"vol":"3767","ts":"1795502580000"}]}}}}'
)


# ---- processes --------------------------------------------------------------------------------


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in a temporary log (kept if it failed)."""
    fd, log_path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if os.environ.get("BENCH_KEEP_LOGS") or proc.returncode not in (0, -signal.SIGTERM):
        sys.stderr.write(f"{name} exited with {proc.returncode}; log: {log_path}\n")
    else:
        os.unlink(log_path)


def tickstream(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("tickstream")), *args]


@dataclass
class Usage:
    cpu_seconds: float
    rss_kb: int


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return Usage(cpu, rss)


def gateway_counters(base_url: str) -> dict[str, float]:
    """The gateway's unlabelled counters and gauges, plus its histograms' buckets
    (`<name>_bucket:<le>`)."""
    text = httpx.get(f"{base_url}/metrics", timeout=60).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("tickstream_gateway_"):
            continue
        name, value = line.rsplit(" ", 1)
        name = name.removeprefix("tickstream_gateway_")
        if "_bucket{le=" in name:
            base, le = name.split("{le=")
            bound = le.strip('"}')
            found[f"{base}:{bound}"] = float(value)
        elif "{" not in name:
            found[name] = float(value)
    return found


def bucket_quantile(delta: dict[str, float], histogram: str, fraction: float) -> str:
    """The upper bound of the bucket holding the `fraction` quantile (a histogram's delta)."""
    prefix = f"{histogram}_bucket:"
    buckets = sorted(
        ((float(k.removeprefix(prefix)), v) for k, v in delta.items() if k.startswith(prefix)),
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "-"
    for bound, count in buckets:
        if count >= fraction * total:
            return "<= %g ms" % (bound * 1000) if bound != float("inf") else "> last bucket"
    return "-"


# ---- the tick source: publisher ----------------------------------------------------------------


def encode_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


def _ltpc(feed: pb.Feed) -> pb.LTPC:
    return feed.ltpc if feed.HasField("ltpc") else feed.fullFeed.marketFF.ltpc


async def publish_loop(
    redis_port: int,
    keys: list[str],
    mode: str,
    rate: float,
    spread: int,
    stop: EventType,
    protocol: str = "json",
) -> None:
    """Every key ticks `rate` times a second, in `spread` evenly spaced batches per round."""
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_port)
    template = FULL_VALUE if mode == "full" else LTPC_VALUE
    upstox = protocol == "upstox"
    if upstox:
        feed = json_format.Parse(template % (0.0, 0), pb.Feed())
        channels = [rc.entry_channel(Mode(mode), key).encode() for key in keys]
        lasts = [rc.last_entry_key(Mode(mode), key).encode() for key in keys]
    else:
        channels = [rc.tick_channel(Mode(mode), key).encode() for key in keys]
        lasts = [rc.last_value_key(Mode(mode), key).encode() for key in keys]
    epoch = os.urandom(6).hex().encode()
    seq = [0] * len(keys)
    price = [1000.0 + 10 * i for i in range(len(keys))]
    batches = [list(range(i, len(keys), spread)) for i in range(spread)]
    period = 1.0 / (rate * spread)
    next_at = time.monotonic()

    async def discard_replies() -> None:
        while await reader.read(1 << 16):
            pass

    drain = asyncio.create_task(discard_replies())
    while not stop.is_set():
        for batch in batches:
            out = []
            for i in batch:
                now_us = time.time_ns() // 1_000
                now_ms = now_us // 1_000
                seq[i] += 1
                price[i] += random.choice((-0.05, 0.05))
                if upstox:
                    ltpc = _ltpc(feed)
                    ltpc.ltp, ltpc.ltt = price[i], now_ms
                    payload = entry_bytes(keys[i], feed.SerializeToString())
                else:
                    value = template % (price[i], now_ms)
                    # `us`: the publisher's clock in microseconds, for the clients' latency.
                    payload = b'%b\n{"seq":%d,"epoch":"%b","us":%d,"ts":%d}' % (
                        value,
                        seq[i],
                        epoch,
                        now_us,
                        now_ms,
                    )
                out.append(encode_command(b"PUBLISH", channels[i], payload))
                out.append(encode_command(b"SET", lasts[i], payload))
            writer.write(b"".join(out))
            await writer.drain()
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: do not try to catch up in a burst
                await asyncio.sleep(0)
    writer.close()
    drain.cancel()


def publisher_main(
    redis_port: int,
    keys: list[str],
    mode: str,
    rate: float,
    spread: int,
    stop: EventType,
    protocol: str,
) -> None:
    import uvloop

    uvloop.run(publish_loop(redis_port, keys, mode, rate, spread, stop, protocol))


# ---- the clients ---------------------------------------------------------------------------------


@dataclass
class ClientStats:
    connected: int = 0
    subscribed: int = 0
    closed: int = 0
    frames: int = 0
    updates: int = 0
    bytes: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (BINS + 1))  # BIN_US each
    measuring: bool = False

    def reset(self) -> None:
        self.frames = self.updates = self.bytes = 0
        self.latency = [0] * (BINS + 1)


def mask_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    data = int.from_bytes(payload, "big") ^ int.from_bytes(
        (mask * (length // 4 + 1))[:length], "big"
    )
    return header + mask + data.to_bytes(length, "big") if length else header + mask


class BenchClient(asyncio.Protocol):
    """One connection; counts what it receives into the process's shared stats."""

    def __init__(self, host: str, port: int, keys: list[str], mode: str, stats: ClientStats,
                 done: asyncio.Future[None], path: str = "/ws") -> None:  # fmt: skip
        """`path`: `/ws`, or an Upstox one-time feed URL's path (Upstox's protocol)."""
        self.host, self.port, self.path = host, port, path
        self.upstox = path != "/ws"
        if self.upstox:
            data = {"mode": mode, "instrumentKeys": keys}
            self.request = orjson.dumps({"guid": "b", "method": "sub", "data": data})
        else:
            self.request = orjson.dumps({"op": "subscribe", "keys": keys, "mode": mode, "id": "b"})
        self.stats = stats
        self.done = done
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(  # type: ignore[union-attr]
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                self._fail("handshake refused")
                return
            del buffer[: end + 4]
            self.open = True
            self.stats.connected += 1
            assert self.transport is not None
            self.transport.write(mask_frame(0x2 if self.upstox else 0x1, self.request))
        stats = self.stats
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            start = pos + head
            pos = start + length
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self._text(buffer, start, pos, stats)
            elif opcode == 0x2:
                self._binary(buffer, start, pos, stats)
            elif opcode == 0x9:  # ping
                assert self.transport is not None
                self.transport.write(mask_frame(0xA, bytes(buffer[start:pos])))
            elif opcode == 0x8:
                stats.closed += 1
        if pos:
            del buffer[:pos]

    def _text(self, buffer: bytearray, start: int, end: int, stats: ClientStats) -> None:
        stats.frames += 1
        stats.bytes += end - start
        if buffer[start + 9 : start + 19] == b'live_feed"':
            if not stats.measuring:
                return
            meta_at = buffer.rfind(b'},"meta":', start, end)
            ts_at = buffer.rfind(b',"currentTs":', start, end)
            meta = orjson.loads(bytes(buffer[meta_at + 9 : ts_at]))
            now_us = time.time_ns() // 1_000
            latency = stats.latency
            for item in meta.values():
                sent_us = item.get("us") or item["ts"] * 1000
                latency[min(max((now_us - sent_us) // BIN_US, 0), BINS)] += 1
            stats.updates += len(meta)
        elif buffer[start + 9 : start + 22] == b'initial_feed"':
            stats.subscribed += 1
            if not self.done.done():
                self.done.set_result(None)
        elif buffer[start + 9 : start + 15] == b'error"':
            sys.stderr.write(bytes(buffer[start:end]).decode() + "\n")

    def _binary(self, buffer: bytearray, start: int, end: int, stats: ClientStats) -> None:
        """An Upstox `FeedResponse`: its type is its first field (absent: initial_feed)."""
        stats.frames += 1
        stats.bytes += end - start
        head = bytes(buffer[start : start + 2])
        if head == b"\x08\x01":  # live_feed
            if not stats.measuring:
                return
            response = pb.FeedResponse.FromString(bytes(buffer[start:end]))
            now_us = time.time_ns() // 1_000
            latency = stats.latency
            for feed in response.feeds.values():
                delay = now_us - _ltpc(feed).ltt * 1000  # ms resolution
                latency[min(max(delay // BIN_US, 0), BINS)] += 1
            stats.updates += len(response.feeds)
        elif head != b"\x08\x02":  # not market_info: initial_feed
            stats.subscribed += 1
            if not self.done.done():
                self.done.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.stats.closed += 1
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def run_clients(
    port: int,
    assignments: list[list[str]],
    mode: str,
    concurrency: int,
    ready: Any,
    start: EventType,
    stop: EventType,
    results: Any,
    protocol: str = "json",
) -> None:
    loop = asyncio.get_running_loop()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)
    stats = ClientStats()
    gate = asyncio.Semaphore(concurrency)
    connections: list[asyncio.BaseTransport] = []
    failures = 0

    async def open_one(keys: list[str]) -> None:
        nonlocal failures
        async with gate:
            done: asyncio.Future[None] = loop.create_future()
            try:
                path = "/ws"
                if protocol == "upstox":
                    answer = await http.get("/v3/feed/market-data-feed/authorize")
                    url = answer.json()["data"]["authorizedRedirectUri"]
                    path = "/" + url.split("/", 3)[3]  # ws://host:port/PATH?code=...
                transport, _ = await loop.create_connection(
                    lambda: BenchClient("127.0.0.1", port, keys, mode, stats, done, path),
                    "127.0.0.1",
                    port,
                )
                connections.append(transport)
                await asyncio.wait_for(done, 60)
            except (OSError, ConnectionError, TimeoutError, httpx.HTTPError) as error:
                failures += 1
                if failures <= 3:
                    sys.stderr.write(f"client connection failed: {error!r}\n")

    await asyncio.gather(*(open_one(keys) for keys in assignments))
    await http.aclose()
    ready.put((stats.subscribed, failures))
    await loop.run_in_executor(None, start.wait)
    stats.reset()
    stats.measuring = True
    cpu0 = time.process_time()
    await loop.run_in_executor(None, stop.wait)
    stats.measuring = False
    cpu = time.process_time() - cpu0
    results.put(
        {
            "frames": stats.frames,
            "updates": stats.updates,
            "bytes": stats.bytes,
            "closed": stats.closed,
            "latency": stats.latency,
            "cpu": cpu,
        }
    )
    for transport in connections:
        transport.close()
    await asyncio.sleep(0.2)


def client_main(port: int, assignments: list[list[str]], mode: str, concurrency: int,
                ready: Any, start: EventType, stop: EventType, results: Any,
                protocol: str) -> None:  # fmt: skip
    import uvloop

    raise_nofile()
    uvloop.run(
        run_clients(port, assignments, mode, concurrency, ready, start, stop, results, protocol)
    )


# ---- orchestration ------------------------------------------------------------------------------


def percentile(histogram: list[int], fraction: float) -> float:
    """The `fraction` quantile of a latency histogram, in ms (the upper bound of its bin)."""
    total = sum(histogram)
    if not total:
        return -1
    threshold = fraction * total
    running = 0
    for value, count in enumerate(histogram):
        running += count
        if running >= threshold:
            return round((value + 1) * BIN_US / 1000, 2)
    return MAX_LATENCY_MS


def universe_keys(count: int) -> list[str]:
    """Listed keys only: the gateway subscribes nothing outside its catalogue."""
    from services.simulator.universe import universe

    keys = [i.instrument_key for i in universe()]
    if count > len(keys):
        raise SystemExit(f"--universe {count}: the simulator lists {len(keys)} instruments")
    return keys[:count]


# The latency-at-every-load loads: (clients, keys per client, universe, ticks per key per
# second). `--shapes` runs each in turn and prints one table; the README's figures come from it.
SHAPES: dict[str, tuple[int, int, int, float]] = {
    "200x10": (200, 10, 200, 2.5),  # 500 ticks/s, 5k updates/s
    "2000x5": (2000, 5, 200, 1.0),  # 200 ticks/s, 10k updates/s
    "500x20": (500, 20, 200, 10.0),  # 2,000 ticks/s, 100k updates/s
    "1000x20": (1000, 20, 200, 15.0),  # 3,000 ticks/s, 300k updates/s
    "5000x10": (5000, 10, 500, 2.0),  # 1,000 ticks/s, 100k updates/s
}
SHAPE_ROW = (
    "| {shape} | {updates_per_s:,} | {frames_per_s:,} | {gateway_cpu_percent}% | {p50} / {p99} ms |"
)


def run_shapes(argv: list[str], burst: int | None) -> int:
    """Each of `SHAPES` with the other options in `argv`; ticks in bursts of `burst` keys (None:
    one key at a time). Prints each report, then a table of them."""
    rows = []
    cores = os.sched_getaffinity(0)
    for shape, (clients, keys, universe, rate) in SHAPES.items():
        os.sched_setaffinity(0, cores)  # --pin narrowed this process to the clients' cores
        spread = universe // burst if burst else universe
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            options = ["--clients", str(clients), "--keys", str(keys), "--universe",
                       str(universe), "--rate", str(rate), "--spread", str(spread)]  # fmt: skip
            if main([*argv, *options, "--json", out.name]) != 0:
                return 1
            report = json.loads(Path(out.name).read_text())
        rows.append(SHAPE_ROW.format(shape=shape, **report, **report["latency_ms"]))
    sys.stdout.write(
        "| shape | updates/s | frames/s | gateway CPU | p50 / p99 |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=10, help="keys per client")
    parser.add_argument("--universe", type=int, default=200, help="distinct keys in play")
    parser.add_argument("--mode", choices=("ltpc", "full"), default="ltpc")
    parser.add_argument("--protocol", choices=("json", "upstox"), default="json")
    parser.add_argument("--rate", type=float, default=4.0, help="ticks per key per second")
    parser.add_argument("--spread", type=int, default=4, help="publisher batches per round")
    parser.add_argument("--source", choices=("publisher", "simulator"), default="publisher")
    parser.add_argument("--sim-tick-ms", type=float, default=250.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--flush-ms", type=float, default=None, help="GATEWAY_FLUSH_INTERVAL_MS")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a new one")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="--redis-url is a Redis Cluster node (REDIS_CLUSTER=true; --source simulator)",
    )
    parser.add_argument(
        "--watch-pids", default="", help="comma-separated pids whose CPU is measured too"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the gateway to here")
    parser.add_argument(
        "--pin", action="store_true", help="gateway alone on one core, the rest on the others"
    )
    parser.add_argument(
        "--server",
        choices=("gateway", "peer"),
        default="gateway",
        help="the server: tickstream's gateway, or bench.peer (per-message sends, for comparison)",
    )
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="run every load of SHAPES (its --clients, --keys, --universe, --rate, --spread)",
    )
    parser.add_argument(
        "--burst", type=int, default=10, help="with --shapes: keys per burst (0: one at a time)"
    )
    args = parser.parse_args(argv)
    if args.shapes:
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--shapes"]
        return run_shapes(rest, args.burst or None)
    if args.redis_cluster and (args.redis_url is None or args.source != "simulator"):
        parser.error("--redis-cluster needs --redis-url and --source simulator")
    watched = [int(pid) for pid in args.watch_pids.split(",") if pid]
    raise_nofile()
    cores = sorted(os.sched_getaffinity(0))
    gateway_core = {cores[-1]}
    if args.pin:
        # The gateway alone on the last core; everything else (Redis, the source, the clients,
        # this process) on the others: they inherit this process's affinity. Other work on the
        # machine is not ours to move.
        os.sched_setaffinity(0, set(cores[:-1]) or gateway_core)

    with contextlib.ExitStack() as stack:
        if args.redis_url:
            redis_url = args.redis_url
            redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        else:
            binary = shutil.which("redis-server")
            if binary is None:
                sys.stderr.write("bench: redis-server not found (or pass --redis-url)\n")
                return 2
            redis_port = free_port()
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis-"))
            stack.enter_context(process(
                [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--protected-mode", "no"],
                {}, "redis"))  # fmt: skip
            wait_port(redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"

        gateway_port = free_port()
        gateway_env = {
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
            "GATEWAY_REPLICA_ID": "bench",
            "GATEWAY_MAX_KEYS_PER_CLIENT": str(max(200, args.keys)),
            # Clients subscribe before the first tick: their initial_feed must not wait for it.
            "GATEWAY_FIRST_VALUE_WAIT_MS": "0",
            # Every benchmark client connects from 127.0.0.1: no per-address cap.
            "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "0",
            "REDIS_CLUSTER": "true" if args.redis_cluster else "false",
        }
        if args.flush_ms is not None:
            gateway_env["GATEWAY_FLUSH_INTERVAL_MS"] = str(args.flush_ms)
        command = tickstream("gateway", "--port", str(gateway_port))
        if args.server == "peer":
            command = [sys.executable, "-m", "bench.peer", "--port", str(gateway_port)]
        if args.profile is not None:  # cProfile the gateway (costs it some speed)
            # uvicorn re-raises SIGTERM after its graceful shutdown, with the handler that was
            # installed before it started: that handler saves the profile.
            code = (
                "import cProfile, os, signal; from services.cli import main\n"
                "profile = cProfile.Profile()\n"
                "def done(*_):\n"
                f"    profile.disable(); profile.dump_stats({str(args.profile)!r}); os._exit(0)\n"
                "signal.signal(signal.SIGTERM, done)\n"
                f"profile.enable(); main({command[1:]!r}); done()\n"
            )
            command = [sys.executable, "-c", code]
        gateway = stack.enter_context(process(command, gateway_env, "gateway"))
        if args.pin:
            os.sched_setaffinity(gateway.pid, gateway_core)
        base = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{base}/readyz")
        keys = universe_keys(args.universe)
        rng = random.Random(7)
        assignments = [rng.sample(keys, min(args.keys, len(keys))) for _ in range(args.clients)]

        source_pids: list[int] = []
        mp = multiprocessing.get_context("spawn")
        stop_source = mp.Event()
        if args.source == "simulator":
            source_pids += start_simulated_source(
                stack, redis_url, args.sim_tick_ms, cluster=args.redis_cluster
            )

        before = usage(gateway.pid)
        ready, results = mp.Queue(), mp.Queue()
        start, stop = mp.Event(), mp.Event()
        workers = []
        for n in range(args.client_procs):
            share = assignments[n :: args.client_procs]
            worker = mp.Process(
                target=client_main,
                args=(
                    gateway_port,
                    share,
                    args.mode,
                    args.connect_concurrency,
                    ready,
                    start,
                    stop,
                    results,
                    args.protocol,
                ),
                daemon=True,
            )
            worker.start()
            workers.append(worker)
        t_connect = time.monotonic()
        subscribed = failed = 0
        for _ in workers:
            ok, bad = ready.get(timeout=600)
            subscribed += ok
            failed += bad
        connect_seconds = time.monotonic() - t_connect
        time.sleep(2.0)  # let allocations settle
        idle = usage(gateway.pid)
        idle_counters = gateway_counters(base)

        publisher = None
        if args.source == "publisher":
            publisher = mp.Process(
                target=publisher_main,
                args=(
                    redis_port,
                    keys,
                    args.mode,
                    args.rate,
                    args.spread,
                    stop_source,
                    args.protocol,
                ),
                daemon=True,
            )
            publisher.start()
            source_pids.append(publisher.pid or 0)
        time.sleep(args.warmup)

        counters0 = gateway_counters(base)
        g0 = usage(gateway.pid)
        s0 = [usage(pid).cpu_seconds for pid in source_pids]
        w0 = [usage(pid).cpu_seconds for pid in watched]
        load0 = os.getloadavg()[0]
        wall0 = time.monotonic()
        start.set()
        time.sleep(args.duration)
        stop.set()
        wall = time.monotonic() - wall0
        load1 = os.getloadavg()[0]
        g1 = usage(gateway.pid)
        s1 = [usage(pid).cpu_seconds for pid in source_pids]
        w1 = [usage(pid).cpu_seconds for pid in watched]
        counters1 = gateway_counters(base)
        reports = [results.get(timeout=60) for _ in workers]
        stop_source.set()
        if publisher is not None:
            publisher.join(10)
        for worker in workers:
            worker.join(10)

    histogram = [sum(column) for column in zip(*(r["latency"] for r in reports), strict=True)]
    updates = sum(r["updates"] for r in reports)
    frames = sum(r["frames"] for r in reports)
    delta = {k: counters1.get(k, 0) - counters0.get(k, 0) for k in counters1}
    per_conn = (idle.rss_kb - before.rss_kb) / max(1, subscribed)
    report = {
        "scenario": {
            "clients": args.clients, "keys_per_client": args.keys, "universe": args.universe,
            "mode": args.mode, "protocol": args.protocol, "source": args.source,
            "rate_per_key": args.rate if args.source == "publisher" else 1000 / args.sim_tick_ms,
            "spread": args.spread, "client_procs": args.client_procs,
            "flush_ms": args.flush_ms, "server": args.server,
            "pinned": args.pin, "duration_s": round(wall, 2), "cores": os.cpu_count(),
        },
        "connected": subscribed, "failed": failed, "connect_seconds": round(connect_seconds, 1),
        "gateway_rss_mb": {"before": before.rss_kb // 1024, "idle": idle.rss_kb // 1024,
                           "end": g1.rss_kb // 1024},
        "idle_kb_per_connection": round(per_conn, 2),
        "updates_per_s": round(updates / wall),
        "frames_per_s": round(frames / wall),
        "updates_per_frame": round(updates / max(1, frames), 2),
        "latency_ms": {"p50": percentile(histogram, 0.5), "p99": percentile(histogram, 0.99),
                       "p999": percentile(histogram, 0.999), "max": percentile(histogram, 1.0)},
        "gateway_cpu_percent": round(100 * (g1.cpu_seconds - g0.cpu_seconds) / wall, 1),
        "source_cpu_percent": round(100 * (sum(s1) - sum(s0)) / wall, 1),
        "clients_cpu_percent": round(100 * sum(r["cpu"] for r in reports) / wall, 1),
        "watched_cpu_percent": {
            str(pid): round(100 * (b - a) / wall, 1)
            for pid, a, b in zip(watched, w0, w1, strict=True)
        },
        "gateway_counters_per_s": {
            k: round(delta.get(k, 0) / wall)
            for k in ("ticks_received_total", "updates_delivered_total", "feed_frames_total",
                      "updates_conflated_total", "slow_clients_dropped_total")
        },
        "gateway_tick_lag": {
            q: bucket_quantile(delta, "tick_lag_seconds", f) for q, f in QUANTILES
        },
        "gateway_flush_pass": {q: bucket_quantile(delta, "flush_seconds", f) for q, f in QUANTILES},
        "gateway_clients": idle_counters.get("clients"),
        "gateway_redis_reconnects": counters1.get("redis_reconnects_total"),
        # The machine's 1-minute load average around the window: other work competes for the
        # same cores, which shows up as latency.
        "load_average": [round(load0, 2), round(load1, 2)],
        "clients_closed": sum(r["closed"] for r in reports),
    }  # fmt: skip
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def start_simulated_source(
    stack: contextlib.ExitStack, redis_url: str, tick_ms: float, *, cluster: bool = False
) -> list[int]:
    """The simulator (as Upstox) and the real ingestor, with the demo user logged in."""
    sim_port, ingestor_port = free_port(), free_port()
    token = "bench-demo-token-" + os.urandom(8).hex()
    sim = stack.enter_context(process(
        tickstream("simulator", "--port", str(sim_port)),
        {"SIMULATOR_DEMO_TOKEN": token, "SIMULATOR_TICK_INTERVAL_MS": str(tick_ms),
         "LOG_LEVEL": "WARNING"}, "simulator"))  # fmt: skip
    wait_port(sim_port)
    asyncio.run(_login(redis_url, token, cluster))
    ingestor = stack.enter_context(process(
        tickstream("ingestor", "--port", str(ingestor_port)),
        {"REDIS_URL": redis_url, "UPSTOX_BASE_URL": f"http://127.0.0.1:{sim_port}",
         "LOG_LEVEL": "WARNING", "INGESTOR_DEMAND_RESCAN_SECONDS": "1",
         "REDIS_CLUSTER": "true" if cluster else "false"}, "ingestor"))  # fmt: skip
    return [sim.pid, ingestor.pid]


async def _login(redis_url: str, token: str, cluster: bool) -> None:
    from shared.redis_client import connect_redis
    from shared.sessions import SessionStore
    from shared.upstox.models import Profile

    client = connect_redis(redis_url, cluster=cluster)
    try:
        await SessionStore(client).save(Profile(user_id="BENCH01"), access_token=token)
    finally:
        await client.aclose()


if __name__ == "__main__":
    raise SystemExit(main())
