"""`tickstream dev` and `DevStack`: the topology plan, start-up failures, the command's life."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.dev.stack import DevStack, StartError
from services.dev.topology import DEMO_SETTINGS, Options, Secrets, internal_names, plan
from shared.ports import free_port

SECRETS = Secrets("internal", "fernet", "admin", "demo-token", "redis-password")


def ports_for(options: Options) -> dict[str, int]:
    return {name: 9000 + i for i, name in enumerate(internal_names(options))}


def test_plan_is_compose_topology_in_dependency_order() -> None:
    options = Options(port=8080, gateways=3)
    topology = plan(options, ports_for(options), SECRETS)
    assert [(s.name, s.command, s.stage) for s in topology.services] == [
        ("redis", "redis-server", 0),
        ("simulator", "simulator", 1),
        ("auth", "auth", 2),
        ("ingestor-1", "ingestor", 3),
        ("ingestor-2", "ingestor", 3),
        ("recorder", "recorder", 3),
        ("gateway-1", "gateway", 3),
        ("gateway-2", "gateway", 3),
        ("gateway-3", "gateway", 3),
        ("front", "front", 4),
    ]
    front = topology.spec("front")
    assert front.port == 8080
    assert front.args == (
        "--gateway", topology.spec("gateway-1").url,
        "--gateway", topology.spec("gateway-2").url,
        "--gateway", topology.spec("gateway-3").url,
        "--auth", topology.spec("auth").url,
        "--simulator", topology.spec("simulator").url,
        "--recorder", topology.spec("recorder").url,
    )  # fmt: skip
    assert topology.spec("ingestor-2").env["INGESTOR_INSTANCE_ID"] == "ingestor-2"
    assert topology.spec("gateway-3").env["GATEWAY_REPLICA_ID"] == "gateway-3"
    redis_port = topology.spec("redis").port
    assert topology.redis_url == f"redis://:redis-password@127.0.0.1:{redis_port}/0"
    assert topology.spec("auth").env["REDIS_URL"] == topology.redis_url
    # for its config file (launch), not its process: Redis's environment is the caller's
    assert topology.spec("redis").env == {"REDIS_PASSWORD": "redis-password"}


def test_plan_wires_the_login_through_the_front_and_the_demo_token() -> None:
    options = Options(port=8080)
    env = plan(options, ports_for(options), SECRETS).spec("auth").env
    assert env["UPSTOX_REDIRECT_URI"] == "http://127.0.0.1:8080/exchange-token"
    assert env["UPSTOX_DIALOG_BASE_URL"] == "http://127.0.0.1:8080"
    assert "http://127.0.0.1:8080/exchange-token" in env["SIMULATOR_REDIRECT_URIS"].split(",")
    assert env["UPSTOX_ACCESS_TOKEN"] == env["SIMULATOR_DEMO_TOKEN"] == "demo-token"
    assert env["API_KEY"] == env["SIMULATOR_CLIENT_ID"]
    assert env["SIMULATOR_REDIRECT_URIS"].split(",") == [
        "http://127.0.0.1:8080/exchange-token",
        "http://localhost:8080/exchange-token",
    ]
    assert "GATEWAY_ALLOWED_ORIGINS" not in env  # same-origin through the front, as in compose


def test_plan_environment_precedence() -> None:
    options = Options(port=8080)
    caller = {"LOG_LEVEL": "DEBUG", "UPSTOX_BASE_URL": "https://api.upstox.com"}
    overrides = {"SIMULATOR_TICK_INTERVAL_MS": "50"}
    env = plan(options, ports_for(options), SECRETS, caller, overrides).spec("gateway-1").env
    assert env["LOG_LEVEL"] == "DEBUG"  # the caller's environment beats the demo defaults
    assert env["LOG_FORMAT"] == DEMO_SETTINGS["LOG_FORMAT"]
    assert env["UPSTOX_BASE_URL"].startswith("http://127.0.0.1:")  # wiring beats the caller
    assert env["SIMULATOR_TICK_INTERVAL_MS"] == "50"  # explicit overrides beat everything


def test_plan_keeps_auths_durable_login_in_the_working_directory(tmp_path: Path) -> None:
    options = Options(port=8080)
    topology = plan(options, ports_for(options), SECRETS, workdir=tmp_path)
    assert topology.spec("auth").env["AUTH_STATE_DIR"] == str(tmp_path / "auth")
    assert "AUTH_STATE_DIR" not in topology.spec("gateway-1").env
    overridden = plan(
        options, ports_for(options), SECRETS, {"AUTH_STATE_DIR": "/elsewhere"}, workdir=tmp_path
    )
    assert overridden.spec("auth").env["AUTH_STATE_DIR"] == str(tmp_path / "auth")  # wiring
    explicit = plan(
        options, ports_for(options), SECRETS, overrides={"AUTH_STATE_DIR": "/x"}, workdir=tmp_path
    )
    assert explicit.spec("auth").env["AUTH_STATE_DIR"] == "/x"  # a test's override wins


def test_plan_records_into_the_working_directory_with_the_services_wiring(tmp_path: Path) -> None:
    options = Options(port=8080)
    topology = plan(options, ports_for(options), SECRETS, workdir=tmp_path)
    recorder = topology.spec("recorder")
    assert recorder.env["RECORDER_DIR"] == str(tmp_path / "recording")
    assert "RECORDER_DIR" not in topology.spec("ingestor-1").env
    # the same Redis and Host allowlist as every service, so it serves through the front
    gateway = topology.spec("gateway-1").env
    for name in ("REDIS_URL", "TICKSTREAM_ALLOWED_HOSTS"):
        assert recorder.env[name] == gateway[name], name
    assert recorder.stage > topology.spec("redis").stage
    assert recorder.stage < topology.spec("front").stage
    explicit = plan(
        options, ports_for(options), SECRETS, overrides={"RECORDER_DIR": "/x"}, workdir=tmp_path
    )
    assert explicit.spec("recorder").env["RECORDER_DIR"] == "/x"  # a test's override wins


def test_plan_gives_the_recorder_the_gateways_viewer_access() -> None:
    options = Options(port=8080)
    viewers = {
        "GATEWAY_VIEWER_ACCESS": "token",
        "GATEWAY_TOKEN_SECRET": "a-viewer-token-secret-of-32-bytes-or-more",
        "GATEWAY_TOKEN_JWKS_URL": "https://idp.example.com/jwks.json",
        "GATEWAY_TOKEN_AUDIENCE": "tickstream",
        "GATEWAY_TOKEN_JWKS_REFRESH_SECONDS": "120",
        "GATEWAY_API_KEYS": "key-one,key-two",
    }
    for caller, overrides in ((viewers, None), (None, viewers)):
        topology = plan(options, ports_for(options), SECRETS, caller, overrides)
        recorder, gateway = topology.spec("recorder").env, topology.spec("gateway-1").env
        for name, value in viewers.items():
            assert recorder[name] == gateway[name] == value, name


def test_plan_with_an_existing_redis_starts_none() -> None:
    options = Options(redis_url="redis://10.0.0.5:6379/2")
    topology = plan(options, ports_for(options), SECRETS)
    assert "redis" not in topology.names()
    assert topology.spec("auth").env["REDIS_URL"] == "redis://10.0.0.5:6379/2"
    assert topology.spec("recorder").env["REDIS_URL"] == "redis://10.0.0.5:6379/2"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="gateway"):
        Options(gateways=0)
    with pytest.raises(ValueError, match="port"):
        Options(port=70000)
    assert Options(host="0.0.0.0", port=9).front_url == "http://127.0.0.1:9"
    assert Options(public_url="https://dev.example/").front_url == "https://dev.example"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_front_port_is_refused_before_anything_starts(busy_port: int) -> None:
    stack = DevStack(Options(port=busy_port))
    try:
        with pytest.raises(StartError, match=f"port {busy_port} on 127.0.0.1 is not free"):
            stack.start()
        assert stack.pids() == {}
    finally:
        stack.close()


def test_missing_redis_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    stack = DevStack(Options(port=0))
    try:
        with pytest.raises(StartError, match="redis-server was not found on PATH"):
            stack.start()
    finally:
        stack.close()


def test_a_service_that_fails_to_start_is_named_with_its_last_lines() -> None:
    stack = DevStack(Options(port=0), overrides={"SIMULATOR_TICK_INTERVAL_MS": "-1"})
    try:
        with pytest.raises(StartError) as failed:
            stack.start()
        message = str(failed.value)
        assert "simulator exited with status 2 while starting" in message
        assert "SIMULATOR_TICK_INTERVAL_MS" in message  # the service's own one-line reason
        assert stack.pids() == {}  # Redis, started first, was stopped again
        assert not stack.unexpected_exits()
    finally:
        stack.close()


def run_dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "dev", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_command_exits_non_zero_with_one_clear_line_on_a_busy_port(busy_port: int) -> None:
    result = run_dev("--port", str(busy_port))
    assert result.returncode == 1
    assert f"tickstream dev: port {busy_port} on 127.0.0.1 is not free" in result.stderr
    assert "Traceback" not in result.stderr


def test_command_rejects_bad_options() -> None:
    result = run_dev("--gateways", "0")
    assert result.returncode == 2
    assert "at least one gateway" in result.stderr


def children_of(pid: int) -> set[int]:
    """Direct children of `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(180)
def test_command_runs_the_whole_system_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    """The README's `tickstream dev`: banner with the URL, prefixed logs, dashboard and login
    through the front, and on SIGTERM every child gone and exit status 0."""
    port = free_port()
    out = (tmp_path / "out.txt").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev", "--port", str(port), "--gateways", "2"],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 150
        text = ""
        while "dashboard " not in text:
            assert process.poll() is None, f"tickstream dev exited early:\n{text}"
            assert time.monotonic() < deadline, f"no banner:\n{text}"
            time.sleep(0.2)
            text = Path(out.name).read_text()
        assert f"dashboard      http://127.0.0.1:{port}/" in text
        names = ("redis", "simulator", "auth", "ingestor-1", "ingestor-2", "recorder", "gateway-2")
        for name in names:
            assert f"\n{name:<10} | " in text, f"no {name} lines"
        assert "redis://127.0.0.1:" in text and "redis://:" not in text  # no password shown
        # auth's one-time operator sign-in link, at the front's address, signs in
        [link] = re.findall(r"sign-in link \(single use, valid 60 min\): (\S+)", text)
        assert link.startswith(f"http://127.0.0.1:{port}/auth/operator?code=")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            assert http.get("/").status_code == 200
            assert http.get("/auth/").status_code == 200
            assert http.get("/healthz").status_code == 200
            assert http.get(link).json()["operator"] is True
            assert http.get("/session").json()["operator"] is True
            # the recording's queries reach the recorder through the front
            ticks = http.get("/api/ticks/NSE_INDEX|Nifty 50")
            assert ticks.status_code == 200, ticks.text
            assert "ticks" in ticks.json()
        children = children_of(process.pid)
        assert (
            len(children) == 9
        )  # redis, simulator, auth, 2 ingestors, recorder, 2 gateways, front

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert [pid for pid in children if alive(pid)] == []
        assert "tickstream dev: stopped" in Path(out.name).read_text()
    finally:
        if process.poll() is None:  # the test failed midway: still leave nothing behind
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        out.close()
