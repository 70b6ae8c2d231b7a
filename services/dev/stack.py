"""`DevStack`: runs a `Topology` as child processes, for `tickstream dev` and the system tests.

Owns the topology-level control: start-up stage by stage (each stage's services started
together, then polled until ready, so a failure names the service and shows why), stopping in
order (front first, Redis last), killing or restarting one service by name, the run's working
directory and the atexit cleanup. Where each service is reached comes from `TopologyAddresses`.

It must not spawn, signal or read processes itself (`supervisor`, `process`), probe them
(`readiness`) or build their command lines (`launch`): it decides what happens to which
service, and when.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from services.dev import launch
from services.dev.launch import StartError
from services.dev.process import ChildProcess, LogSink
from services.dev.readiness import wait_all_ready
from services.dev.supervisor import Supervisor
from services.dev.topology import (
    REDIS,
    Options,
    Secrets,
    ServiceSpec,
    Topology,
    TopologyAddresses,
    internal_names,
    plan,
)
from shared.ports import free_port

__all__ = ["DevStack", "LogSink", "StartError"]


class DevStack(TopologyAddresses):
    """The whole topology as local processes.

    `start()` starts everything (or one service by name) and waits until ready; `stop()` stops
    gracefully (SIGTERM, then SIGKILL after `stop_timeout`); `kill(name)` is a SIGKILL;
    `restart(name)` stops and starts one service on the same port. Names: `redis`, `simulator`,
    `auth`, `ingestor-1`.., `gateway-1`.., `front`.
    """

    def __init__(
        self,
        options: Options | None = None,
        *,
        overrides: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        log_sink: LogSink | None = None,
        ready_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        options = options or Options()
        self._taken: set[int] = set()
        if options.port == 0:
            options = dataclasses.replace(options, port=free_port(options.host, self._taken))
        self._workdir = Path(tempfile.mkdtemp(prefix="tickstream-dev-"))
        ports = {name: free_port(taken=self._taken) for name in internal_names(options)}
        self.topology: Topology = plan(
            options,
            ports,
            Secrets.generate(),
            base_env=dict(os.environ if base_env is None else base_env),
            overrides=overrides,
            workdir=self._workdir,
        )
        self.log_sink = log_sink
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self._children = Supervisor()
        self._closed = False
        atexit.register(self._kill_all_at_exit)

    @property
    def workdir(self) -> Path:
        """The run's working directory: Redis's data and config file, auth's durable login."""
        return self._workdir

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self, name: str | None = None) -> None:
        """Start everything in stage order (or only `name`) and wait until ready.

        On a failure while starting everything, what was started is stopped again and
        `StartError` says what went wrong.
        """
        if name is not None:
            self._start_and_wait([self.topology.spec(name)])
            return
        launch.preflight(self.topology.options)
        try:
            stages = sorted({spec.stage for spec in self.topology.services})
            for stage in stages:
                self._start_and_wait([s for s in self.topology.services if s.stage == stage])
        except BaseException:
            self.stop()
            raise

    def stop(self, name: str | None = None) -> None:
        """Stop gracefully: SIGTERM, wait `stop_timeout`, then SIGKILL. Everything: front first,
        Redis last (services release their leases on the way out)."""
        if name is not None:
            self._children.terminate([name], self.stop_timeout)
            return
        order = [s.name for s in reversed(self.topology.services) if s.name != REDIS]
        try:
            self._children.terminate(order, self.stop_timeout)
            self._children.terminate([REDIS], self.stop_timeout)
        except KeyboardInterrupt:
            self.kill_all()  # a second Ctrl-C: no more waiting
            raise

    def close(self) -> None:
        """Stop everything and remove the working directory."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            atexit.unregister(self._kill_all_at_exit)
            shutil.rmtree(self._workdir, ignore_errors=True)

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would, and reap it."""
        self._children.kill(name)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def kill_all(self) -> None:
        self._children.kill_all()

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- state ---------------------------------------------------------------------------

    def running(self, name: str) -> bool:
        return self._children.running(name)

    def pids(self) -> dict[str, int]:
        """Pids of the services that are running now."""
        return self._children.pids()

    def unexpected_exits(self) -> dict[str, int]:
        """Services that exited without being stopped or killed through this object: status."""
        return self._children.unexpected_exits()

    def logs(self, name: str) -> list[str]:
        """The last lines `name` wrote (up to 2000), across restarts only the current run."""
        return self._children.logs(name)

    # ---- internals -----------------------------------------------------------------------

    def _spawn(self, spec: ServiceSpec) -> ChildProcess:
        command = launch.command(spec, self.topology.options, self.python, self._workdir)
        try:
            return self._children.spawn(spec.name, command, self.log_sink)
        except OSError as error:
            raise StartError(f"{spec.name}: cannot run {spec.command}: {error}") from None

    def _start_and_wait(self, specs: Iterable[ServiceSpec]) -> None:
        started = [(spec, self._spawn(spec)) for spec in specs]
        wait_all_ready(started, self.ready_timeout)

    def _kill_all_at_exit(self) -> None:
        # Last resort when the owner never called close(): no orphans left behind.
        with contextlib.suppress(Exception):
            self.kill_all()
