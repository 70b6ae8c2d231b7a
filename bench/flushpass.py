"""`python -m bench.flushpass`: what one flush pass costs per frame, against the kernel's send.

    .venv/bin/python -m bench.flushpass --clients 5000 --keys 10 --universe 500 --batch 125

One process holds --clients accepted loopback TCP connections (uvloop, the gateway's event
loop); a child process on the other core opens them and reads and discards everything. Each
connection is a subscriber of a real `FanOut` (the gateway's JSON wire) to --keys random keys of
a --universe, writing through a sink shaped like the gateway connection's. Each round publishes
--batch ticks of distinct keys (ingestor-shaped payloads, `--mode`) and then times, in turn:

- `pass`: `FanOut.flush()`, every due frame built and written to its socket (what the gateway's
  flush costs);
- `ours`: the same flush with sinks that keep the frame and send nothing (the pass less the
  kernel: frame building and per-client bookkeeping);
- `send`: the frames `ours` built, written straight to the same transports (`transport.write`:
  uvloop's call and the kernel's send, which on loopback also runs the receiver's TCP stack).
  This is the floor of a frame: no server can deliver one for less.

It prints microseconds per frame of each, as medians over the rounds, and how far the pass is
above the floor. Rounds wait for the readers to drain, so no socket buffer fills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from multiprocessing.synchronize import Event as EventType
from typing import Any

from bench.fanout import FULL_VALUE, LTPC_VALUE, raise_nofile, universe_keys
from services.gateway.fanout import FanOut, Subscriber
from shared.instruments import Mode


class TransportSink:
    """The gateway connection's `send_frame`, on a bare transport."""

    __slots__ = ("_open", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport: asyncio.Transport | None = transport
        self._open = True

    def send_frame(self, frame: bytes) -> None:
        if self._open and self._transport is not None:
            self._transport.write(frame)

    def backlog(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0


class KeepSink:
    """Keeps the last frame instead of sending it."""

    __slots__ = ("frame",)

    def __init__(self) -> None:
        self.frame = b""

    def send_frame(self, frame: bytes) -> None:
        self.frame = frame

    def backlog(self) -> int:
        return 0


class Accepted(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.Transport], expected: int,
                 all_in: asyncio.Event) -> None:  # fmt: skip
        self.transports, self.expected, self.all_in = transports, expected, all_in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)  # type: ignore[arg-type]
        if len(self.transports) == self.expected:
            self.all_in.set()

    def data_received(self, data: bytes) -> None:
        pass


class Discard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def read_all(port: int, clients: int, stop: EventType) -> None:
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(clients):
        transport, _ = await loop.create_connection(Discard, "127.0.0.1", port)
        transports.append(transport)
    await loop.run_in_executor(None, stop.wait)
    for transport in transports:
        transport.close()


def reader_main(port: int, clients: int, stop: EventType, cores: list[int]) -> None:
    import uvloop

    os.sched_setaffinity(0, cores)
    raise_nofile()
    uvloop.run(read_all(port, clients, stop))


def payload(value: bytes, price: float, seq: int) -> bytes:
    now_ms = time.time_ns() // 1_000_000
    return b'%b\n{"seq":%d,"epoch":"bench","ts":%d}' % (value % (price, now_ms), seq, now_ms)


def subscribe_all(fanout: FanOut, subs: list[Subscriber], assignments: list[list[str]],
                  mode: Mode) -> None:  # fmt: skip
    for sub, keys in zip(subs, assignments, strict=True):
        joined = [fanout.join(sub, mode, key).channel for key in keys]
        fanout.complete(sub, [(channel, None) for channel in joined])


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    all_in = asyncio.Event()
    server = await loop.create_server(
        lambda: Accepted(transports, args.clients, all_in), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})
    stop = multiprocessing.get_context("spawn").Event()
    reader = multiprocessing.get_context("spawn").Process(
        target=reader_main, args=(port, args.clients, stop, cores[:-1] or cores), daemon=True
    )
    reader.start()
    await all_in.wait()

    mode = Mode(args.mode)
    keys = universe_keys(args.universe)
    rng = random.Random(7)
    assignments = [rng.sample(keys, args.keys) for _ in range(args.clients)]
    sending, keeping = FanOut(), FanOut()
    sent_subs = [Subscriber(TransportSink(t)) for t in transports]
    kept = [KeepSink() for _ in transports]
    kept_subs = [Subscriber(sink) for sink in kept]
    subscribe_all(sending, sent_subs, assignments, mode)
    subscribe_all(keeping, kept_subs, assignments, mode)
    value = FULL_VALUE if mode is Mode.FULL else LTPC_VALUE
    channel_names = {key: sending.channels[(mode, key)].name for key in keys}

    per_frame: dict[str, list[float]] = {"pass": [], "ours": [], "send": []}
    frames_per_round: list[int] = []
    deliveries = 0
    for n in range(args.rounds):
        batch = rng.sample(keys, args.batch)
        ticks = [(channel_names[key], payload(value, 1000.0 + n, n)) for key in batch]
        for name, data in ticks:
            keeping.publish(name, data)
        delivered_before = keeping.stats.delivered
        started = time.perf_counter()
        frames = keeping.flush()
        ours = time.perf_counter() - started
        delivered = keeping.stats.delivered - delivered_before
        built = [(sink.frame, t) for sink, t in zip(kept, transports, strict=True) if sink.frame]
        for sink in kept:
            sink.frame = b""
        started = time.perf_counter()
        for frame, transport in built:
            transport.write(frame)
        send = time.perf_counter() - started
        await drained(transports)
        for name, data in ticks:
            sending.publish(name, data)
        started = time.perf_counter()
        sent = sending.flush()
        whole = time.perf_counter() - started
        await drained(transports)
        if not frames or sent != frames or len(built) != frames:
            raise SystemExit(f"round {n}: {frames} frames kept, {sent} sent, {len(built)} built")
        if n >= args.warmup:
            frames_per_round.append(frames)
            deliveries += delivered
            per_frame["pass"].append(whole / frames * 1e6)
            per_frame["ours"].append(ours / frames * 1e6)
            per_frame["send"].append(send / frames * 1e6)
    stop.set()
    reader.join(10)
    server.close()
    medians = {name: round(statistics.median(values), 2) for name, values in per_frame.items()}
    return {
        "scenario": {
            "clients": args.clients, "keys_per_client": args.keys, "universe": args.universe,
            "batch": args.batch, "mode": args.mode, "rounds": args.rounds - args.warmup,
        },
        "frames_per_round": round(statistics.median(frames_per_round)),
        "updates_per_frame": round(deliveries / max(1, sum(frames_per_round)), 2),
        "us_per_frame": medians,
        "pass_over_send": round(medians["pass"] / medians["send"], 2),
        "pass_minus_send_us": round(medians["pass"] - medians["send"], 2),
    }  # fmt: skip


async def drained(transports: list[asyncio.Transport]) -> None:
    """Until every socket's buffer is empty (the readers took everything)."""
    while True:
        await asyncio.sleep(0.005)
        if not any(t.get_write_buffer_size() for t in transports):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.flushpass", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=10, help="keys per client")
    parser.add_argument("--universe", type=int, default=500)
    parser.add_argument("--batch", type=int, default=125, help="ticks (distinct keys) per round")
    parser.add_argument("--mode", choices=("ltpc", "full"), default="full")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    if args.batch > args.universe or args.keys > args.universe:
        parser.error("--batch and --keys are at most --universe")
    raise_nofile()
    import uvloop

    report = uvloop.run(measure(args))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
