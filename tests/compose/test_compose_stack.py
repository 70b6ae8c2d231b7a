"""The `docker compose` stack as a user meets it, through the proxy's one published port.

Run by `scripts/compose-smoke`, which brings the stack up (`--scale gateway=2`), waits until every
service is healthy, and passes where it is in TICKSTREAM_COMPOSE_URL and how to drive compose in
TICKSTREAM_COMPOSE_CMD. Without them (the default test command) these tests are deselected by
the `compose` marker, or skipped when selected by hand.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from shared import redis_contract as rc

# Upper bounds only: scaling out and waiting for health may be slow on a busy machine.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

KEY = "NSE_INDEX|Nifty 50"
UPSTREAM = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" \d+ .*upstream=(?P<addr>[^ ]+)')


@dataclass(frozen=True)
class Stack:
    url: str
    compose: list[str]

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws"

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{shlex.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def container_ids(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()


@pytest.fixture(scope="module")
def stack() -> Stack:
    url = os.environ.get("TICKSTREAM_COMPOSE_URL")
    command = os.environ.get("TICKSTREAM_COMPOSE_CMD")
    if not url or not command:
        pytest.skip("needs a running compose stack: run scripts/compose-smoke")
    return Stack(url.rstrip("/"), shlex.split(command))


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as client:
        yield client


def docker_inspect(container: str, template: str) -> str:
    done = subprocess.run(
        ["docker", "inspect", "-f", template, container],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def open_feed(stack: Stack) -> ClientConnection:
    return connect(stack.ws_url, origin=Origin(stack.url), proxy=None, open_timeout=10)


def receive_updates(ws: ClientConnection, key: str, wanted: int, within: float) -> list[int]:
    """Subscribes to `key` and returns the sequence numbers of its first `wanted` live updates."""
    ws.send(json.dumps({"op": "subscribe", "keys": [key], "mode": "ltpc", "id": "smoke"}))
    acked = False
    seqs: list[int] = []
    deadline = time.monotonic() + within
    while len(seqs) < wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"within {within}s: ack={acked}, live updates of {key}: {seqs}")
        message: dict[str, Any] = json.loads(ws.recv(timeout=left))
        kind = message.get("type")
        if kind == "error":
            pytest.fail(f"gateway refused the subscription: {message}")
        if kind == "ack" and message.get("id") == "smoke":
            assert key in message["keys"]
            acked = True
        if kind == "live_feed" and key in message["feeds"]:
            assert "ltpc" in message["feeds"][key], message["feeds"][key]
            seqs.append(int(message["meta"][key]["seq"]))
    assert acked
    return seqs


def test_dashboard_and_auth_are_served_through_the_proxy(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" in page.text

    assert http.get("/_front/healthz").text == "ok\n"
    assert http.get("/healthz").status_code == 200  # a gateway's own
    assert http.get("/metrics").status_code == 404  # scraped inside the network, not via the edge

    # The demo token in compose.yaml logs the simulator's demo user in at auth's start.
    deadline = time.monotonic() + 60
    while (session := http.get("/session")).json().get("logged_in") is not True:
        if time.monotonic() > deadline:
            pytest.fail(f"not logged in with the demo token: {session.status_code} {session.text}")
        time.sleep(1)
    assert session.json()["user_id"], session.text


def raw_status(stack: Stack, target: str) -> int:
    """The status nginx answers for `target` sent exactly as written (httpx would normalise it)."""
    address = urlsplit(stack.url)
    with socket.create_connection((address.hostname, address.port or 80), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("target", "status"),
    [
        # an upstream could read these as another path than the one nginx matched
        ("/api/../metrics", 400),
        ("/api/%2e%2e/metrics", 400),
        ("/api/..%2Fmetrics", 400),
        ("/api/./instruments", 400),
        ("//metrics", 400),
        ("/%2Fmetrics", 400),
        ("@auth:8001/metrics", 400),  # not origin-form: nginx's own 400
        # internal, as spelled or after /auth is removed
        ("/metrics/", 404),
        ("/auth/metrics", 404),
        ("/token/DEMO01", 404),
        ("/auth/token/DEMO01", 404),
        ("/healthz", 200),
    ],
)
def test_the_edge_routes_one_spelling_of_each_path(stack: Stack, target: str, status: int) -> None:
    assert raw_status(stack, target) == status


def test_a_websocket_client_receives_live_updates(stack: Stack) -> None:
    with open_feed(stack) as ws:
        seqs = receive_updates(ws, KEY, wanted=3, within=90)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


def container_health(container: str) -> dict[str, Any]:
    """A service's own /healthz, asked from inside its container (its port is not published)."""
    probe = (
        "import os, urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=4).read().decode())"
    )
    done = subprocess.run(
        ["docker", "exec", container, "python", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def test_one_ingestor_holds_the_lease_and_the_other_stands_by(stack: Stack) -> None:
    containers = [*stack.container_ids("ingestor-1"), *stack.container_ids("ingestor-2")]
    assert len(containers) == 2, containers
    deadline = time.monotonic() + 60
    while True:
        health = [container_health(container) for container in containers]
        states = sorted(str(h["state"]) for h in health)
        if states == ["connected", "standby"]:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"ingestor states: {health}")
        time.sleep(1)
    active = next(h["instance"] for h in health if h["state"] == "connected")
    [redis] = stack.container_ids("redis")
    lease = subprocess.run(
        ["docker", "exec", redis, "redis-cli", "GET", rc.INGESTOR_LEASE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert lease == active, (lease, health)


def upstreams_seen(stack: Stack, since: str, path: str) -> set[str]:
    """Addresses of the gateways that served `path` according to the proxy's access log."""
    logs = stack.run("logs", "--no-color", "proxy")
    seen: set[str] = set()
    for line in logs[logs.rfind(since) :].splitlines():
        match = UPSTREAM.search(line)
        if match and match["path"].startswith(path):
            # "a:p, b:p" when nginx tried more than one; the last one answered.
            seen.add(match["addr"].split(",")[-1].strip().rsplit(":", 1)[0])
    return seen


def mark_log(http: httpx.Client) -> str:
    """A request whose line in the proxy's log marks where to start reading (its query is not
    logged, so the mark is a path: the gateway answers 404)."""
    marker = f"/compose-smoke-mark-{time.time_ns()}"
    http.get(marker)
    return marker


def wait_healthy(container: str, within: float) -> None:
    deadline = time.monotonic() + within
    while (health := docker_inspect(container, "{{.State.Health.Status}}")) != "healthy":
        if time.monotonic() > deadline:
            pytest.fail(f"{container} is {health} after {within}s")
        time.sleep(1)


def test_a_replica_added_by_scale_gets_traffic(stack: Stack, http: httpx.Client) -> None:
    before = set(stack.container_ids("gateway"))
    assert len(before) == 2, before
    stack.run("up", "-d", "--no-recreate", "--no-build", "--scale", "gateway=3")
    after = set(stack.container_ids("gateway"))
    added = after - before
    assert len(after) == 3 and len(added) == 1, (before, after)
    new = added.pop()
    wait_healthy(new, within=120)
    address = {
        name: docker_inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        for name in after
    }
    new_address = address[new]

    # Plain requests: spread over all three replicas once the proxy's DNS cache (5s) expired.
    marker = mark_log(http)
    deadline = time.monotonic() + 90
    while (seen := upstreams_seen(stack, marker, "/healthz")) != set(address.values()):
        if time.monotonic() > deadline:
            pytest.fail(f"requests reached {seen}, gateways are {address}")
        for _ in range(20):
            assert http.get("/healthz").status_code == 200
        time.sleep(1)

    # Live data: WebSocket clients until one was served by the new replica (each has a one in
    # three chance), each receiving a live update first.
    marker = mark_log(http)
    for _ in range(30):
        with open_feed(stack) as ws:
            receive_updates(ws, KEY, wanted=1, within=60)
        if new_address in upstreams_seen(stack, marker, "/ws"):
            break
    else:
        pytest.fail(f"no /ws connection reached the new replica {new_address}")


def test_a_login_runs_through_the_proxy(stack: Stack, http: httpx.Client) -> None:
    """authorize (auth) -> the simulator's dialog (/v2/login/) -> exchange-token (auth).

    The dialog and redirect URLs name the front as compose's defaults give it to a browser
    (localhost:8080); this test's front is on another port, so it keeps their path and query.
    """
    before = http.get("/session").json()

    start = http.get("/authorize")
    assert start.status_code == 302, start.text
    dialog = httpx.URL(start.headers["location"])
    assert dialog.path == "/v2/login/authorization/dialog", dialog
    page = http.get(dialog.raw_path.decode())
    assert page.status_code == 200 and "<form" in page.text

    params = dict(dialog.params)
    approved = http.post(
        dialog.path,
        data={
            "response_type": params["response_type"],
            "client_id": params["client_id"],
            "redirect_uri": params["redirect_uri"],
            "state": params["state"],
            "user_id": "DEMO01",
        },
    )
    assert approved.status_code == 302, approved.text
    callback = httpx.URL(approved.headers["location"])
    assert callback.path == "/exchange-token" and "code" in callback.params, callback.path

    done = http.get(callback.raw_path.decode())
    assert done.status_code == 303, done.text
    session = http.get("/session").json()
    assert session["logged_in"] is True and session["user_id"] == "DEMO01", session
    assert session["issued_at"] != before.get("issued_at"), (before, session)
