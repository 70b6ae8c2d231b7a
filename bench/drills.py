"""Failure drills, measured as a client sees them: the longest time without a new value.

    .venv/bin/python -m bench.drills [--drills ingestor,redis,drop,stall,gateway] [--repeat 1]
        [--bound 30] [--set NAME=VALUE ...]

Starts `tickstream dev`'s topology on free loopback ports (`tests.support.stack`: Redis, the
simulator, auth, two ingestors, two gateways, the front) with the product's default settings
(`--set` overrides one, e.g. `--set INGESTOR_LEASE_TTL_MS=5000`), keeps one WebSocket client
subscribed through the front to a few keys in full mode, and runs each drill in turn:

| drill | fault |
| --- | --- |
| `ingestor` | SIGKILL of the active ingestor (the lease holder) |
| `redis` | SIGKILL of Redis, then started again from its data directory |
| `drop` | the simulator closes every feed connection (`POST /admin/drop-connections`) |
| `stall` | the open upstream connection goes silent for 60 s (`POST /admin/stall?seconds=60`) |
| `gateway` | SIGKILL of the gateway the client is connected to |

The client reconnects on close with a short backoff and subscribes again, as a real client
would (`tests.system.feed.FeedClient`). For each drill the report gives the
longest time the client went without a new value (a value it had not seen: a snapshot resending
the same sequence numbers does not count), from the last one before the fault until updates
have flowed steadily again (no gap over 1.5 s for 5 s), or "never" when they did not within
`--bound` seconds of the fault; also the client's reconnections and the new epochs it saw. A
killed service is started again after its drill; when a drill leaves the system without
updates, the next drill gets a fresh stack (the report says so).

This module owns the drills, the measuring client and the report. It must not change the
system under test beyond the faults above; it only talks to loopback addresses, and it stops by
itself (every wait has a bound).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from services.dev.topology import REDIS
from tests.support.stack import Stack, running_stack
from tests.system.feed import FeedClient

__all__ = ["DRILLS", "FeedWatcher", "Outcome", "main"]

KEYS = ("NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018", "NSE_INDEX|Nifty Bank")
# Longer than two silence limits: the watchdog, not the end of the stall, must heal it.
STALL_SECONDS = 60
# Updates flow "steadily" when no gap in the last STEADY_SPAN seconds exceeded STEADY_GAP: well
# above the demo's 500 ms tick, well below any fault's effect.
STEADY_GAP = 1.5
STEADY_SPAN = 5.0
# A fault's effect is looked for this long after it was injected even when updates never paused.
MIN_WATCH = 3.0


class FeedWatcher(FeedClient):
    """The drills' client (`FeedClient`: subscribes, reconnects on close with a short backoff and
    subscribes again) noting when each new value arrived (monotonic clock)."""

    def __init__(self, url: str, origin: str) -> None:
        super().__init__(url, list(KEYS), mode="full", origin=origin, record=False)
        self.arrivals: list[float] = []
        self.seen_epochs: set[str] = set()
        self._seen: dict[str, tuple[str, int]] = {}

    def _handle(self, connection: int, message: str | bytes) -> None:
        super()._handle(connection, message)
        now = time.monotonic()
        frame = json.loads(message)
        if frame.get("type") not in ("initial_feed", "live_feed"):
            return
        fresh = False
        for key, info in frame.get("meta", {}).items():
            stamp = (str(info.get("epoch")), int(info.get("seq", -1)))
            self.seen_epochs.add(stamp[0])
            if self._seen.get(key) != stamp:
                self._seen[key] = stamp
                fresh = True
        if fresh:
            self.arrivals.append(now)

    # ---- reading the arrivals ------------------------------------------------------------

    def last_before(self, moment: float) -> float | None:
        earlier = [t for t in self.arrivals if t <= moment]
        return earlier[-1] if earlier else None

    def longest_gap(self, start: float, end: float) -> float:
        """The longest stretch without a new value in [start, end] (an open one included)."""
        times = [start, *(t for t in self.arrivals if start < t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def steady(self, now: float) -> bool:
        return bool(self.arrivals) and self.longest_gap(now - STEADY_SPAN, now) <= STEADY_GAP


@dataclass(frozen=True)
class Outcome:
    drill: str
    gap: float | None  # the longest time without a new value; None: updates never came back
    reconnects: int  # client connections opened during the drill
    new_epochs: int
    note: str = ""


class Run:
    """The stack under test and its client; replaced by a fresh pair when a drill broke it."""

    def __init__(self, overrides: dict[str, str]) -> None:
        self.overrides = overrides
        self.stack: Stack | None = None
        self.watcher: FeedWatcher | None = None
        self.fresh_stacks = 0
        self._manager: contextlib.AbstractContextManager[Stack] | None = None

    async def start(self) -> None:
        self._manager = running_stack(gateways=2, fast=False, overrides=self.overrides)
        self.stack = await asyncio.to_thread(self._manager.__enter__)
        self.watcher = FeedWatcher(self.stack.front_ws_url, self.stack.front_url)
        await self.watcher.__aenter__()
        sys.stderr.write(f"drills: stack up, logs in {self.stack.log_path}\n")

    async def close(self) -> None:
        watcher, manager = self.watcher, self._manager
        self.stack = self.watcher = self._manager = None
        if watcher is not None:
            await watcher.__aexit__(None, None, None)
        if manager is not None:
            await asyncio.to_thread(manager.__exit__, None, None, None)

    async def ready(self) -> tuple[Stack, FeedWatcher]:
        """The stack with updates flowing steadily: healed, or replaced when it cannot be."""
        if self.stack is not None and self.watcher is not None:
            await asyncio.to_thread(self.stack.heal)
            if await _wait_steady(self.watcher, within=60):
                return self.stack, self.watcher
            sys.stderr.write("drills: no steady updates any more; starting a fresh stack\n")
            await self.close()
            self.fresh_stacks += 1
        await self.start()
        assert self.stack is not None and self.watcher is not None
        if not await _wait_steady(self.watcher, within=90):
            raise RuntimeError(
                f"a fresh stack delivers no steady updates: see {self.stack.log_path}"
            )
        return self.stack, self.watcher


async def _wait_steady(watcher: FeedWatcher, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if watcher.steady(time.monotonic()):
            return True
        await asyncio.sleep(0.1)
    return False


# ---- the faults ------------------------------------------------------------------------------


async def kill_active_ingestor(stack: Stack) -> str:
    active = await stack.active_ingestor()
    if active is None or active not in stack.ingestors:
        raise RuntimeError(f"no ingestor of the stack holds the lease ({active!r})")
    await stack.akill(active)
    return f"killed {active}"


async def kill_and_restart_redis(stack: Stack) -> str:
    await stack.akill(REDIS)
    await stack.astart(REDIS)  # the same port and data directory
    return "killed and restarted redis"


async def drop_upstream(stack: Stack) -> str:
    dropped = await stack.admin("drop-connections", code=1011)
    return f"dropped {dropped.get('dropped')} feed connection(s)"


async def stall_upstream(stack: Stack) -> str:
    await stack.admin("stall", seconds=STALL_SECONDS)
    return f"upstream silent for {STALL_SECONDS} s"


async def kill_serving_gateway(stack: Stack) -> str:
    serving = await serving_gateway(stack)
    await stack.akill(serving)
    return f"killed {serving}"


async def serving_gateway(stack: Stack) -> str:
    """The gateway with our client (the only client): the one whose clients gauge is not 0."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        for name in stack.gateways:
            if not stack.running(name):
                continue
            metrics = (await http.get(stack.dev.urls[name] + "/metrics")).text
            for line in metrics.splitlines():
                if line.startswith("tickstream_gateway_clients ") and float(line.split()[1]) > 0:
                    return name
    raise RuntimeError("no gateway reports a connected client")


Fault = Callable[[Stack], Awaitable[str]]

DRILLS: dict[str, tuple[str, Fault]] = {
    "ingestor": ("active ingestor SIGKILL", kill_active_ingestor),
    "redis": ("Redis SIGKILL and restart", kill_and_restart_redis),
    "drop": ("upstream drop", drop_upstream),
    "stall": (f"upstream stall ({STALL_SECONDS} s)", stall_upstream),
    "gateway": ("gateway SIGKILL", kill_serving_gateway),
}


async def drill(name: str, stack: Stack, watcher: FeedWatcher, bound: float) -> Outcome:
    title, fault = DRILLS[name]
    connections, epochs = watcher.connections, len(watcher.seen_epochs)
    injected = time.monotonic()
    note = await fault(stack)
    applied = time.monotonic()
    # Watch until updates have flowed steadily for a while after the fault, or the bound.
    deadline = applied + bound
    while True:
        now = time.monotonic()
        if now >= deadline or (now >= applied + MIN_WATCH and watcher.steady(now)):
            break
        await asyncio.sleep(0.1)
    start = watcher.last_before(injected) or injected
    gap = watcher.longest_gap(start, now)
    # Nothing came back, or only a trickle: not what a user would call "updates resumed".
    return Outcome(
        title,
        gap if watcher.steady(now) else None,
        watcher.connections - connections,
        len(watcher.seen_epochs) - epochs,
        note,
    )


# ---- the report ------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def report(outcomes: list[Outcome], args: argparse.Namespace, fresh: int) -> str:
    lines = [
        "| drill | longest time without an update | client reconnects | new epochs | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.drill} | {seconds(o.gap)} | {o.reconnects} | {o.new_epochs} | {o.note} |"
        )
    if args.repeat > 1:
        lines += [
            "",
            "| drill | runs | worst | median | never |",
            "| --- | --- | --- | --- | --- |",
        ]
        for title in dict.fromkeys(o.drill for o in outcomes):
            gaps = [o.gap for o in outcomes if o.drill == title]
            measured = [g for g in gaps if g is not None]
            never = len(gaps) - len(measured)
            worst = seconds(max(measured)) if measured else "never"
            median = seconds(statistics.median(measured)) if measured else "-"
            lines.append(f"| {title} | {len(gaps)} | {worst} | {median} | {never} |")
    settings = ", ".join(f"{k}={v}" for k, v in args.set) or "the defaults"
    lines += ["", f"Settings: {settings}; keys {', '.join(KEYS)} in full mode."]
    if fresh:
        lines.append(f"{fresh} drill(s) found the system without updates and ran on a fresh stack.")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    session = Run(dict(args.set))
    outcomes: list[Outcome] = []
    try:
        for _ in range(args.repeat):
            for name in args.drills:
                stack, watcher = await session.ready()
                outcome = await drill(name, stack, watcher, args.bound)
                sys.stderr.write(
                    f"drills: {outcome.drill}: {seconds(outcome.gap)} ({outcome.note})\n"
                )
                outcomes.append(outcome)
    finally:
        await session.close()
    sys.stdout.write(report(outcomes, args, session.fresh_stacks) + "\n")
    return 0


def _drill_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown drill(s) {unknown}; known: {', '.join(DRILLS)}")
    return names


def _setting(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name.strip(), setting


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.drills", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--drills", type=_drill_names, default=list(DRILLS), help=f"of {', '.join(DRILLS)}"
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the list this many times")
    parser.add_argument(
        "--bound", type=float, default=30.0, help="seconds to wait for updates (else: never)"
    )
    parser.add_argument(
        "--set", type=_setting, action="append", default=[], help="NAME=VALUE for every service"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
