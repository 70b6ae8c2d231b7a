"""Redis's password (issue 13): `tickstream dev` gives its Redis a new one each run, kept off
every command line, and a service whose REDIS_URL password is missing or wrong says so once,
without the password, keeps running, and recovers by itself once the password matches.

Real processes: the dev stack's, and a password-protected redis-server with an ingestor and a
gateway started as `tickstream` commands.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from shared import redis_contract as rc
from shared.ports import free_port
from tests.support.redis_server import redis_from_config
from tests.support.stack import Stack, running_stack, wait_until

REFUSED = "Redis refused this service's password"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as stack:
        yield stack


def test_the_dev_stacks_redis_refuses_a_client_without_its_password(stack: Stack) -> None:
    address = urlsplit(stack.redis_url)
    assert address.password and len(address.password) >= 24
    anonymous = redis.Redis(host=address.hostname or "", port=address.port or 6379)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get(rc.INGESTOR_LEASE)
    anonymous.close()
    # ...and every service has it: an ingestor took the lease, a gateway is ready.
    client = redis.Redis.from_url(stack.redis_url)
    wait_until(lambda: client.get(rc.INGESTOR_LEASE) is not None, 60, "an ingestor's lease")
    client.close()
    assert httpx.get(stack.gateway_urls[0] + "/readyz", trust_env=False).status_code == 200


def test_the_dev_stacks_redis_password_is_on_no_command_line(stack: Stack) -> None:
    password = urlsplit(stack.redis_url).password
    assert password
    for name, pid in stack.dev.pids().items():
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert password.encode() not in command_line, f"{name}'s command line has it"
    config = stack.dev.workdir / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert password in config.read_text()


@contextmanager
def protected_redis(password: str) -> Iterator[int]:
    """A redis-server requiring `password` (set in its config file), on a free port."""
    directory = Path(tempfile.mkdtemp(prefix="tickstream-redis-auth-"))
    config = directory / "redis.conf"
    config.write_text(f"requirepass {password}\n")
    with redis_from_config(config, directory) as port:
        yield port


@contextmanager
def service(
    command: str, redis_url: str, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        # nothing answers there: these services need only Redis to show what is tested
        "UPSTOX_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "UPSTOX_ACCESS_TOKEN": "",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", command, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def status(url: str) -> int:
    try:
        return httpx.get(url, trust_env=False, timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_a_service_refused_by_redis_says_why_once_and_recovers_when_the_password_matches(
    tmp_path: Path,
) -> None:
    right, wrong = "right-" + os.urandom(8).hex(), "wrong-" + os.urandom(8).hex()
    with (
        protected_redis(right) as port,
        service("gateway", f"redis://:{wrong}@127.0.0.1:{port}/0", tmp_path / "gw.log") as gw,
        service("ingestor", f"redis://127.0.0.1:{port}/0", tmp_path / "ing.log") as ingestor,
    ):
        (gateway, gateway_url), (ingestor_process, _) = gw, ingestor
        logs = {"gateway": tmp_path / "gw.log", "ingestor": tmp_path / "ing.log"}
        for name, log in logs.items():
            wait_until(lambda log=log: REFUSED in log.read_text(), 60, f"{name} to say why")
        assert gateway.poll() is None and ingestor_process.poll() is None
        assert status(gateway_url + "/healthz") == 200
        assert status(gateway_url + "/readyz") == 503

        # The operator makes them match (here on Redis's side): the gateway is back by itself.
        admin = redis.Redis(port=port, password=right)
        admin.config_set("requirepass", wrong)
        admin.close()
        wait_until(lambda: status(gateway_url + "/readyz") == 200, 90, "the gateway to recover")

        text = {name: log.read_text() for name, log in logs.items()}
    for name, output in text.items():
        assert wrong not in output and right not in output, f"{name} logged a password"
        assert "Traceback" not in output, output
    # once for the whole outage, not at every retry
    assert text["gateway"].count(REFUSED) == 1, text["gateway"]
    assert "REDIS_URL" in text["ingestor"]
