"""A real Redis Cluster for tests: 3 masters and 3 replicas of `redis-server` from PATH.

Owns the cluster's processes and the faults tests inflict on them: SIGKILL a node and wait for
its replica to take over, move a slot from one master to another (all at once, or begun and
finished apart so a test can act while the slot is migrating), restart every node from its
`nodes.conf`. Every node requires `password` (as compose's Redis does); `url` and each node's
`url` carry it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared.ports import free_port
from tests.support.redis_server import RedisUnavailable, wait_for_port

SLOTS = 16384
# Short, so a killed master's replica is promoted within seconds, not the default 15.
NODE_TIMEOUT_MS = 1000


@dataclass
class ClusterNode:
    """One `redis-server` of the cluster; `process` is None while it is killed."""

    port: int
    bus_port: int  # chosen too: port + 10000 (Redis's default) may be in the ephemeral range
    directory: Path
    password: str
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this node alone."""
        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def node_id(self) -> str:
        with self.client() as client:
            return str(client.execute_command("CLUSTER", "MYID"), "ascii")

    def role(self) -> str:
        """ "master" or "slave" (Redis's word), as the node itself says."""
        with self.client() as client:
            reply = client.execute_command("ROLE")
        role = reply[0]
        return role.decode() if isinstance(role, bytes) else str(role)

    def start(self, binary: str) -> None:
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", self.host,
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica always stands for election, however stale: the tests kill masters
                # moments after writing.
                "--cluster-replica-validity-factor", "0",
                "--requirepass", self.password,
                "--masterauth", self.password,
                "--appendonly", "no",
                "--save", "",
                "--dir", str(self.directory),
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.host, self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


class RedisClusterHarness:
    """Six nodes on free ports in one temporary directory; `start()` creates the cluster."""

    def __init__(self, server: str, cli: str, masters: int = 3, password: str = "") -> None:
        self.server = server
        self.cli = cli
        self.password = password or "cluster-test-password"
        self._root = Path(tempfile.mkdtemp(prefix="tickstream-cluster-"))
        taken: set[int] = set()
        self.nodes: list[ClusterNode] = []
        for _ in range(masters * 2):
            port, bus_port = free_port(taken=taken), free_port(taken=taken)
            directory = self._root / str(port)
            directory.mkdir()
            self.nodes.append(
                ClusterNode(port, bus_port, directory=directory, password=self.password)
            )
        self._masters = masters

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.server)
        if self._masters < 3:
            self._create_small()
            return
        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        options = ["--cluster-replicas", "1", "--cluster-yes"]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, *options],
            check=True,
            capture_output=True,
            env={**os.environ, "REDISCLI_AUTH": self.password},  # not on the command line
            timeout=60,
        )
        self.wait_ok()

    def _create_small(self) -> None:
        """What `redis-cli --cluster create` refuses (fewer than 3 masters, for benchmarks):
        slots split evenly over the first nodes, one replica each, by hand."""
        masters, replicas = self.nodes[: self._masters], self.nodes[self._masters :]
        share = SLOTS // len(masters)
        for index, master in enumerate(masters):
            last = SLOTS - 1 if index == len(masters) - 1 else (index + 1) * share - 1
            with master.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        first = masters[0]
        for node in self.nodes[1:]:
            with node.client() as client:
                client.execute_command("CLUSTER", "MEET", first.host, first.port, first.bus_port)
        ids = [master.node_id() for master in masters]
        deadline = time.monotonic() + 30
        for replica, master_id in zip(replicas, ids, strict=True):
            with replica.client() as client:
                while True:  # until the replica has heard of its master through the gossip
                    try:
                        client.execute_command("CLUSTER", "REPLICATE", master_id)
                        break
                    except redis.ResponseError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
        self.wait_ok()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self._root, ignore_errors=True)

    def restart_all(self) -> None:
        """SIGKILL every node, start each again from its nodes.conf, wait until all is served."""
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            node.start(self.server)
        self.wait_ok()

    # ---- what tests read ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A URL of one live node (cluster clients discover the rest from it)."""
        return self.live()[0].url

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def masters(self) -> list[ClusterNode]:
        return [node for node in self.live() if node.role() == "master"]

    def replicas(self) -> list[ClusterNode]:
        return [node for node in self.live() if node.role() == "slave"]

    def node_on_port(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def slot_owner(self, slot: int) -> ClusterNode:
        """The master serving `slot`, as a live node sees the cluster."""
        for start, end, port in self._slots():
            if start <= slot <= end:
                return self.node_on_port(port)
        raise LookupError(f"slot {slot} is served by no node")

    def key_slot(self, key: str) -> int:
        with self.live()[0].client() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as client:
                client.flushall()

    # ---- faults ------------------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL `node`; the cluster notices within NODE_TIMEOUT_MS."""
        node.kill()

    def revive(self, node: ClusterNode) -> None:
        """Start a killed node again from its nodes.conf (a former master rejoins as replica)."""
        node.start(self.server)
        self.wait_ok()

    def wait_failover(self, timeout: float = 30.0) -> None:
        """Wait until every slot is served again by a live master (a replica promoted)."""
        self.wait_ok(timeout)

    def move_slot(self, slot: int, to_node: ClusterNode) -> None:
        """Move `slot` and its keys to `to_node`, as `redis-cli --cluster reshard` would."""
        source = self.begin_slot_move(slot, to_node)
        self.migrate_keys(slot, source, to_node)
        self.finish_slot_move(slot, to_node)

    def begin_slot_move(self, slot: int, to_node: ClusterNode) -> ClusterNode:
        """Mark `slot` IMPORTING on `to_node` and MIGRATING on its owner; returns the owner.
        Until `finish_slot_move`, the owner answers ASK for keys it no longer holds."""
        source = self.slot_owner(slot)
        with to_node.client() as target:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id())
        with source.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to_node.node_id())
        return source

    def migrate_keys(self, slot: int, source: ClusterNode, to_node: ClusterNode) -> None:
        with source.client() as client:
            while keys := client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                client.execute_command(
                    "MIGRATE", to_node.host, to_node.port, "", 0, 5000,
                    "AUTH", self.password, "KEYS", *keys,
                )  # fmt: skip

    def finish_slot_move(self, slot: int, to_node: ClusterNode) -> None:
        target_id = to_node.node_id()
        # The new owner first, then the rest: the order redis-cli uses, so no node points back.
        for node in [to_node, *[n for n in self.masters() if n is not to_node]]:
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_ok()

    # ---- waiting -----------------------------------------------------------------------------

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok, every slot is served by a live master
        and all live nodes agree on who serves what."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                last = self._problem()
            except (redis.RedisError, OSError, LookupError) as error:
                last = str(error)
            if not last:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the Redis Cluster is not ok after {timeout}s: {last}")

    def _problem(self) -> str:
        views: set[tuple[tuple[int, int, int], ...]] = set()
        for node in self.live():
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or f"cluster_slots_ok:{SLOTS}" not in text:
                    return f"node {node.port}: {text.splitlines()[:3]}"
                ranges = client.execute_command("CLUSTER", "SLOTS")
            views.add(tuple(sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges)))
        if len(views) != 1:
            return "the nodes disagree on slot owners"
        (view,) = views
        served = sum(end - start + 1 for start, end, _ in view)
        if served != SLOTS:
            return f"{served} slots served"
        alive = {node.port for node in self.live()}
        if any(port not in alive for _, _, port in view):
            return "a slot is still assigned to a dead master"
        for node in self.live():
            if node.role() == "slave":
                with node.client() as client:
                    replication = client.info("replication")
                if replication.get("master_link_status") != "up":
                    return f"replica {node.port} not in sync yet"
        return ""

    def _slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master's port) of each range."""
        with self.live()[0].client() as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in ranges]


@contextlib.contextmanager
def session_cluster() -> Iterator[RedisClusterHarness]:
    """A started cluster, cleaned up on exit; RedisUnavailable without the binaries."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise RedisUnavailable("the cluster tests need redis-server and redis-cli on PATH")
    cluster = RedisClusterHarness(server, cli)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
