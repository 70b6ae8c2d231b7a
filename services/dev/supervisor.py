"""`Supervisor`: the named child processes of one stack, and stopping them in groups.

Owns the table of names to current `ChildProcess`es, under a lock (the owner, a test's worker
thread and the atexit hook all reach it): one running copy per name, a graceful stop of a group
(SIGTERM to all, one shared deadline, then SIGKILL for what is left), SIGKILL as a crash, and
what is read off the children (running, pids, unexpected exits, recent lines).

It must not know the topology, how a service's command line is built or when it is ready, nor
decide any order: callers name the processes and the order.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable

from services.dev.process import ChildProcess, Command, LogSink

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)


class Supervisor:
    """Named children: spawn, stop in groups, kill; a restarted name replaces its old process."""

    def __init__(self) -> None:
        self._processes: dict[str, ChildProcess] = {}
        self._lock = threading.RLock()

    def spawn(self, name: str, command: Command, sink: LogSink | None) -> ChildProcess:
        """Start `name` (`RuntimeError` if it is already running; `OSError` if it cannot run)."""
        with self._lock:
            current = self._processes.get(name)
            if current is not None and current.running():
                raise RuntimeError(f"{name} is already running")
            process = ChildProcess.spawn(name, command, sink)
            self._processes[name] = process
            return process

    def terminate(self, names: Iterable[str], timeout: float) -> None:
        """Stop gracefully, together: SIGTERM to each, then SIGKILL what is left at `timeout`."""
        with self._lock:
            processes = [self._processes[n] for n in names if n in self._processes]
        for process in processes:
            process.expected_down = True
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            if process.wait(max(0.0, deadline - time.monotonic())) is None:
                logger.warning("%s did not stop within %.0fs; killing it", process.name, timeout)
                process.signal(signal.SIGKILL)
                process.wait(None)
            process.finish()

    def kill(self, name: str) -> None:
        """SIGKILL one process, as a crash would, and reap it."""
        with self._lock:
            process = self._processes.get(name)
        if process is None or not process.running():
            raise RuntimeError(f"{name} is not running")
        process.kill()

    def kill_all(self) -> None:
        """SIGKILL every process at once, then reap them (no graceful anything)."""
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.expected_down = True
            process.signal(signal.SIGKILL)
        for process in processes:
            process.wait(5)
            process.finish()

    def running(self, name: str) -> bool:
        with self._lock:
            process = self._processes.get(name)
        return process is not None and process.running()

    def pids(self) -> dict[str, int]:
        """Pids of the processes that are running now."""
        with self._lock:
            return {n: p.pid for n, p in self._processes.items() if p.running()}

    def unexpected_exits(self) -> dict[str, int]:
        """Processes that exited without being stopped or killed through this object: status."""
        with self._lock:
            processes = dict(self._processes)
        return {
            name: code
            for name, process in processes.items()
            if (code := process.exit_status()) is not None and not process.expected_down
        }

    def logs(self, name: str) -> list[str]:
        """The last lines `name` wrote, of its current run only."""
        with self._lock:
            process = self._processes.get(name)
        return list(process.history) if process else []
