"""`DevStack`: runs a `Topology` as child processes, for `tickstream dev` and the system tests.

Each service is a child process in its own session (so a Ctrl-C at the terminal reaches only
`tickstream dev`, which then stops the children in order), with its output read line by line by
a thread that hands it to a sink (`gateway-1 | ...` on the terminal) and keeps the last lines
for error messages. Start-up goes stage by stage, each service polled on its `/readyz` (Redis:
PING) until it answers, so a failure names the service and shows why.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

import httpx

from services.dev.topology import (
    AUTH,
    FRONT,
    REDIS,
    SIMULATOR,
    Options,
    Secrets,
    ServiceSpec,
    Topology,
    internal_names,
    plan,
)
from shared.ports import free_port

__all__ = ["DevStack", "LogSink", "StartError"]

logger = logging.getLogger(__name__)

LogSink = Callable[[str, str], None]
"""Called with (service name, one line of its output) from the service's reader thread."""

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOG_HISTORY_LINES = 2000
ERROR_TAIL_LINES = 25


class StartError(RuntimeError):
    """A service could not be started; the message says which, why, and its last log lines."""


def check_port_free(host: str, port: int) -> None:
    """Raise `StartError` when something already listens on `host:port`."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise StartError(
                f"port {port} on {host} is not free ({error.strerror}): stop whatever uses it "
                "or choose another port with --port"
            ) from None


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class ServiceProcess:
    """One running child and the thread that reads its output."""

    def __init__(self, spec: ServiceSpec, popen: subprocess.Popen[bytes], sink: LogSink | None):
        self.spec = spec
        self.popen = popen
        self.expected_down = False
        self.history: collections.deque[str] = collections.deque(maxlen=LOG_HISTORY_LINES)
        self._sink = sink
        self._reader = threading.Thread(target=self._read, name=f"log-{spec.name}", daemon=True)
        self._reader.start()

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
                        self._sink(self.spec.name, line)
                    except Exception:  # a broken sink must not stop the draining of the pipe
                        logger.exception("log sink failed for %s", self.spec.name)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self) -> None:
        """After the process has exited: let the reader drain what is left of the pipe."""
        self._reader.join(timeout=5)

    def tail(self, lines: int = ERROR_TAIL_LINES) -> str:
        recent = list(self.history)[-lines:]
        return "\n".join(f"  {self.spec.name} | {line}" for line in recent)


class DevStack:
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
        )
        self.log_sink = log_sink
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.python = python
        self._processes: dict[str, ServiceProcess] = {}
        self._lock = threading.RLock()
        self._closed = False
        atexit.register(self._kill_all_at_exit)

    # ---- addresses -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.topology.services]

    @property
    def front_url(self) -> str:
        return self.topology.front_url

    @property
    def gateway_urls(self) -> list[str]:
        return self.topology.gateway_urls

    @property
    def auth_url(self) -> str:
        return self.topology.spec(AUTH).url

    @property
    def simulator_url(self) -> str:
        return self.topology.spec(SIMULATOR).url

    @property
    def redis_url(self) -> str:
        return self.topology.redis_url

    @property
    def admin_key(self) -> str:
        """The simulator's admin API key (header `X-Admin-Key`)."""
        return self.topology.secrets.simulator_admin_key

    @property
    def demo_token(self) -> str:
        return self.topology.secrets.demo_token

    @property
    def urls(self) -> dict[str, str]:
        """Every service's own base URL (Redis: its redis:// URL), by name."""
        result = {spec.name: spec.url for spec in self.topology.services if spec.name != REDIS}
        result[REDIS] = self.redis_url
        result[FRONT] = self.front_url
        return result

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self, name: str | None = None) -> None:
        """Start everything in stage order (or only `name`) and wait until ready.

        On a failure while starting everything, what was started is stopped again and
        `StartError` says what went wrong.
        """
        if name is not None:
            self._start_and_wait([self.topology.spec(name)])
            return
        self._preflight()
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
            self._terminate([name])
            return
        order = [s.name for s in reversed(self.topology.services) if s.name != REDIS]
        try:
            self._terminate(order)
            self._terminate([REDIS])
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
        with self._lock:
            process = self._processes.get(name)
        if process is None or not process.running():
            raise RuntimeError(f"{name} is not running")
        process.expected_down = True
        process.signal(signal.SIGKILL)
        process.wait(None)
        process.finish()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def kill_all(self) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.expected_down = True
            process.signal(signal.SIGKILL)
        for process in processes:
            process.wait(5)
            process.finish()

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
        with self._lock:
            process = self._processes.get(name)
        return process is not None and process.running()

    def pids(self) -> dict[str, int]:
        """Pids of the services that are running now."""
        with self._lock:
            return {n: p.pid for n, p in self._processes.items() if p.running()}

    def unexpected_exits(self) -> dict[str, int]:
        """Services that exited without being stopped or killed through this object: status."""
        with self._lock:
            processes = dict(self._processes)
        return {
            name: code
            for name, process in processes.items()
            if (code := process.popen.poll()) is not None and not process.expected_down
        }

    def logs(self, name: str) -> list[str]:
        """The last lines `name` wrote (up to 2000), across restarts only the current run."""
        with self._lock:
            process = self._processes.get(name)
        return list(process.history) if process else []

    # ---- internals -----------------------------------------------------------------------

    def _preflight(self) -> None:
        options = self.topology.options
        check_port_free(options.host, options.port)
        if not options.redis_url and shutil.which("redis-server") is None:
            raise StartError(
                "redis-server was not found on PATH: install it (e.g. apt-get install "
                "redis-server) or set REDIS_URL to a running Redis"
            )

    def _argv(self, spec: ServiceSpec) -> list[str]:
        if spec.command == "redis-server":
            data = self._workdir / "redis"
            data.mkdir(exist_ok=True)
            # No --save "": Redis's default snapshots are kept, so a graceful restart (SIGTERM)
            # keeps the stored login, as a restarted Redis with a volume does under compose.
            return [
                "redis-server",
                "--port", str(spec.port),
                "--bind", "127.0.0.1",
                "--dir", str(data),
                "--appendonly", "no",
                "--protected-mode", "no",
            ]  # fmt: skip
        host = self.topology.options.host if spec.name == FRONT else "127.0.0.1"
        return [
            self.python,
            "-m",
            "services.cli",
            spec.command,
            "--host",
            host,
            "--port",
            str(spec.port),
            *spec.args,
        ]

    def _env(self, spec: ServiceSpec) -> dict[str, str]:
        env = dict(spec.env) if spec.command != "redis-server" else dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
        return env

    def _spawn(self, spec: ServiceSpec) -> ServiceProcess:
        with self._lock:
            current = self._processes.get(spec.name)
            if current is not None and current.running():
                raise RuntimeError(f"{spec.name} is already running")
            try:
                popen = subprocess.Popen(
                    self._argv(spec),
                    env=self._env(spec),
                    # not the caller's directory: a stray `.env` there must not change the demo
                    cwd=self._workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                raise StartError(f"{spec.name}: cannot run {spec.command}: {error}") from None
            process = ServiceProcess(spec, popen, self.log_sink)
            self._processes[spec.name] = process
            return process

    def _start_and_wait(self, specs: Iterable[ServiceSpec]) -> None:
        started = [self._spawn(spec) for spec in specs]
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            for process in started:
                self._wait_ready(process, deadline, client)

    def _wait_ready(self, process: ServiceProcess, deadline: float, client: httpx.Client) -> None:
        spec = process.spec
        last = "no answer"
        path = spec.ready_path
        while True:
            code = process.popen.poll()
            if code is not None:
                process.finish()
                raise StartError(
                    f"{spec.name} exited with status {code} while starting; its last lines:\n"
                    + process.tail()
                )
            if path is None:
                if redis_ping(spec.port):
                    return
            else:
                try:
                    response = client.get(spec.url + path)
                except httpx.HTTPError as error:
                    last = type(error).__name__
                else:
                    if response.status_code == 200:
                        return
                    if response.status_code == 404 and path == "/readyz":
                        path = "/healthz"  # a service without readiness: alive is the best sign
                        continue
                    last = f"{path}: HTTP {response.status_code} {response.text[:200]}"
            if time.monotonic() > deadline:
                raise StartError(
                    f"{spec.name} was not ready within {self.ready_timeout:.0f}s "
                    f"(last answer: {last}); its last lines:\n" + process.tail()
                )
            time.sleep(0.1)

    def _terminate(self, names: Iterable[str]) -> None:
        with self._lock:
            processes = [self._processes[n] for n in names if n in self._processes]
        for process in processes:
            process.expected_down = True
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in processes:
            if process.wait(max(0.0, deadline - time.monotonic())) is None:
                name = process.spec.name
                logger.warning("%s did not stop within %.0fs; killing it", name, self.stop_timeout)
                process.signal(signal.SIGKILL)
                process.wait(None)
            process.finish()

    def _kill_all_at_exit(self) -> None:
        # Last resort when the owner never called close(): no orphans left behind.
        with contextlib.suppress(Exception):
            self.kill_all()
