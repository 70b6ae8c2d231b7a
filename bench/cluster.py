"""Cluster benchmark: the same offered load on a Redis Cluster of 1 master and of 3.

    .venv/bin/python -m bench.cluster --clients 500 --keys 10 --universe 200 --sim-tick-ms 250

Each run is `bench.fanout` (its gateway, clients and report) with the whole data path as the
source (the simulator and the real ingestor, both with REDIS_CLUSTER=true) against a fresh
cluster from the tests' harness (`tests/support/redis_cluster.py`: each master with one
replica). It reports, per run: updates delivered/s, the CPU of each master (the replicas are
not counted: they only apply the last values the masters replicate), and the gateway's CPU
per delivered update. Every process shares the machine's cores, as in `bench.fanout`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import fanout
from tests.support.redis_cluster import RedisClusterHarness


def run_once(masters: int, passthrough: list[str], server: str, cli: str) -> dict[str, Any]:
    """One fanout run on a fresh cluster of `masters` masters: its report, plus the masters'
    CPU."""
    cluster = RedisClusterHarness(server, cli, masters=masters)
    try:
        cluster.start()
        pids = {str(node.pid): node.port for node in cluster.masters()}
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as directory:
            out = Path(directory) / "report.json"
            code = fanout.main(
                [
                    *passthrough,
                    "--source", "simulator",
                    "--redis-url", cluster.url,
                    "--redis-cluster",
                    "--watch-pids", ",".join(pids),
                    "--json", str(out),
                ]
            )  # fmt: skip
            if code != 0:
                raise RuntimeError(f"bench.fanout failed with {code}")
            report: dict[str, Any] = json.loads(out.read_text())
    finally:
        cluster.cleanup()
    watched = report["watched_cpu_percent"]
    report["masters_cpu_percent"] = {f"master:{pids[pid]}": cpu for pid, cpu in watched.items()}
    return report


def summary(masters: int, report: dict[str, Any]) -> dict[str, Any]:
    updates = report["updates_per_s"]
    gateway_cpu = report["gateway_cpu_percent"]
    per_master = list(report["masters_cpu_percent"].values())
    return {
        "masters": masters,
        "updates_per_s": updates,
        "masters_cpu_percent": per_master,
        "masters_cpu_total_percent": round(sum(per_master), 1),
        "gateway_cpu_percent": gateway_cpu,
        # CPU seconds per delivery, in microseconds: gateway_cpu% / 100 / (updates per second)
        "gateway_us_per_update": round(gateway_cpu * 1e4 / updates, 2) if updates else None,
        "ingestor_and_simulator_cpu_percent": report["source_cpu_percent"],
        "latency_ms": report["latency_ms"],
        "connected": report["connected"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--masters", default="1,3", help="cluster sizes to compare")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args, passthrough = parser.parse_known_args(argv)
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        sys.stderr.write("bench.cluster: redis-server and redis-cli are needed on PATH\n")
        return 2
    results = []
    for masters in (int(n) for n in args.masters.split(",")):
        results.append(summary(masters, run_once(masters, passthrough, server, cli)))
    text = json.dumps(results, indent=2) + "\n"
    sys.stdout.write(text)
    if args.json is not None:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
