"""`ChildProcess`: one service as a child process, and the thread that reads its output.

Owns one process's life at the OS level: spawning it in its own session (so a Ctrl-C at the
terminal reaches only `tickstream dev`, which then stops the children in order), reading its
output line by line on a thread that hands each line to a sink and keeps the last lines for
error messages, signalling, waiting, reaping and the exit status.

It must not know the topology, readiness, or the order services start and stop in: it runs one
argv with one environment, under a name used only for its log lines.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ERROR_TAIL_LINES", "LOG_HISTORY_LINES", "ChildProcess", "Command", "LogSink"]

logger = logging.getLogger(__name__)

LogSink = Callable[[str, str], None]
"""Called with (service name, one line of its output) from the service's reader thread."""

LOG_HISTORY_LINES = 2000
ERROR_TAIL_LINES = 25


@dataclass(frozen=True)
class Command:
    """What a child runs: its argv, its whole environment and its working directory."""

    argv: list[str]
    env: Mapping[str, str]
    cwd: Path


class ChildProcess:
    """One running child and the thread that reads its output."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], sink: LogSink | None) -> None:
        self.name = name
        self.popen = popen
        self.expected_down = False  # stopped or killed on purpose: not an unexpected exit
        self.history: collections.deque[str] = collections.deque(maxlen=LOG_HISTORY_LINES)
        self._sink = sink
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    @classmethod
    def spawn(cls, name: str, command: Command, sink: LogSink | None) -> ChildProcess:
        """Start `command` in its own session, stdout and stderr merged; `OSError` if it can't."""
        popen = subprocess.Popen(
            command.argv,
            env=dict(command.env),
            cwd=command.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(name, popen, sink)

    def _read(self) -> None:
        stream = self.popen.stdout
        if stream is None:
            return
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.history.append(line)
                if self._sink is not None:
                    try:
                        self._sink(self.name, line)
                    except Exception:  # a broken sink must not stop the draining of the pipe
                        logger.exception("log sink failed for %s", self.name)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def exit_status(self) -> int | None:
        """The exit status once the process has exited (reaping it), else None."""
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would, reap it and drain its output."""
        self.expected_down = True
        self.signal(signal.SIGKILL)
        self.wait(None)
        self.finish()

    def finish(self) -> None:
        """After the process has exited: let the reader drain what is left of the pipe."""
        self._reader.join(timeout=5)

    def tail(self, lines: int = ERROR_TAIL_LINES) -> str:
        recent = list(self.history)[-lines:]
        return "\n".join(f"  {self.name} | {line}" for line in recent)
