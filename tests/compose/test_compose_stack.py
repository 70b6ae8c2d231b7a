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


def raw_answer(stack: Stack, request: str) -> tuple[int, bytes]:
    """Status and head of the answer to a request sent exactly as written. Read up to the end of
    the head only: a refused WebSocket handshake leaves the connection open."""
    address = urlsplit(stack.url)
    with socket.create_connection((address.hostname, address.port or 80), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer.split(b"\r\n\r\n", 1)[0]


def raw_status(stack: Stack, target: str) -> int:
    """The status nginx answers for `target` sent exactly as written (httpx would normalise it)."""
    host = urlsplit(stack.url).netloc  # a name the stack answers to (TICKSTREAM_ALLOWED_HOSTS)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_answer(stack, request)[0]


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


def redis_cli(container: str, *command: str, password: bool = True) -> str:
    """redis-cli in Redis's container; with `password`, authenticated with the stack's password
    (REDISCLI_AUTH, read inside the container: never on a command line)."""
    auth = 'REDISCLI_AUTH="$(cat /run/tickstream/redis-secrets/password)" ' if password else ""
    done = subprocess.run(
        ["docker", "exec", container, "sh", "-c", auth + 'redis-cli "$@"', "redis-cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return (done.stdout + done.stderr).strip()


def edge_address(container: str) -> str:
    """The container's address on the edge network, the one nginx reaches it at."""
    networks: dict[str, dict[str, Any]] = json.loads(
        docker_inspect(container, "{{json .NetworkSettings.Networks}}")
    )
    [address] = [v["IPAddress"] for k, v in networks.items() if k.endswith("_edge")]
    return str(address)


def test_a_websocket_client_receives_live_updates(stack: Stack) -> None:
    with open_feed(stack) as ws:
        seqs = receive_updates(ws, KEY, wanted=3, within=90)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


def test_what_a_client_watches_is_recorded_and_served_through_the_proxy(
    stack: Stack, http: httpx.Client
) -> None:
    """The recorder in its container: Redis through its own secrets volume, its named volume
    writable by its user, and /api/ticks/ routed to it by nginx."""
    with open_feed(stack) as ws:
        receive_updates(ws, KEY, wanted=3, within=90)
        deadline = time.monotonic() + 60
        while True:
            answer = http.get(f"/api/ticks/{KEY}")
            assert answer.status_code == 200, answer.text
            if answer.json()["ticks"]:
                break
            assert time.monotonic() < deadline, "nothing recorded within 60 s"
            time.sleep(1)
    tick = answer.json()["ticks"][-1]
    assert tick["ltp"] > 0 and tick["ts"].endswith("+05:30")


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
    lease = redis_cli(redis, "GET", rc.INGESTOR_LEASE)
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
    address = {name: edge_address(name) for name in after}
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


@pytest.fixture
def operator(stack: Stack) -> Iterator[httpx.Client]:
    """A browser signed in as the operator through the proxy, with a one-time link minted as the
    README says (`docker compose exec auth tickstream operator-link`); its requests carry the
    session's CSRF token."""
    printed = stack.run("exec", "-T", "auth", "tickstream", "operator-link", timeout=120)
    [link] = [line for line in printed.split() if "/auth/operator?code=" in line]
    with httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as browser:
        # the link names the front as compose's defaults give it (localhost:8080)
        signed = browser.get(httpx.URL(link).raw_path.decode(), headers={"Accept": "text/html"})
        assert signed.status_code == 303, signed.text
        session = browser.get("/session").json()
        assert session.get("operator") is True, session
        browser.headers["X-CSRF-Token"] = session["csrf_token"]
        yield browser


def test_a_login_runs_through_the_proxy(stack: Stack, operator: httpx.Client) -> None:
    """The operator: authorize (auth) -> the simulator's dialog (/v2/login/) -> exchange-token
    (auth).

    The dialog and redirect URLs name the front as compose's defaults give it to a browser
    (localhost:8080); this test's front is on another port, so it keeps their path and query.
    """
    http = operator
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


# --- hardening (issue 13) -------------------------------------------------------------------------


def running_containers(stack: Stack) -> dict[str, str]:
    """Every running container of the stack by its compose service name (the one-shot `secrets`
    service has exited by now)."""
    found: dict[str, str] = {}
    for container in stack.run("ps", "-q").split():
        state, service = docker_inspect(
            container, '{{.State.Status}} {{index .Config.Labels "com.docker.compose.service"}}'
        ).split()
        if state == "running":
            found.setdefault(service, container)
    return found


def test_every_container_runs_read_only_unprivileged_with_no_capabilities(stack: Stack) -> None:
    containers = running_containers(stack)
    assert {"redis", "simulator", "auth", "ingestor-1", "gateway", "proxy"} <= set(containers)
    for service, container in containers.items():
        config = json.loads(docker_inspect(container, "{{json .HostConfig}}"))
        assert config["ReadonlyRootfs"] is True, service
        assert "no-new-privileges:true" in (config["SecurityOpt"] or []), service
        assert [c.upper().removeprefix("CAP_") for c in config["CapDrop"]] == ["ALL"], service
        assert not config["CapAdd"], service
        assert not config["Privileged"], service
        user = docker_inspect(container, "{{.Config.User}}")
        assert user not in ("", "0", "root", "0:0"), (service, user)


def test_redis_requires_its_password_which_is_in_no_environment(stack: Stack) -> None:
    containers = running_containers(stack)
    redis = containers["redis"]
    assert "NOAUTH" in redis_cli(redis, "GET", rc.INGESTOR_LEASE, password=False)
    assert redis_cli(redis, "PING") == "PONG"
    assert redis_cli(redis, "CONFIG", "GET", "maxmemory-policy").split() == [
        "maxmemory-policy",
        "noeviction",
    ]
    secret = subprocess.run(
        ["docker", "exec", redis, "cat", "/run/tickstream/redis-secrets/password"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert len(secret) >= 32
    for service, container in containers.items():
        seen = docker_inspect(container, "{{json .Config.Env}} {{json .Config.Cmd}} {{json .Args}}")
        assert secret not in seen, f"Redis's password is in {service}'s configuration"


def test_each_secret_volume_is_mounted_only_where_it_is_needed(stack: Stack) -> None:
    readers: dict[str, set[str]] = {}
    for service, container in running_containers(stack).items():
        mounts = json.loads(docker_inspect(container, "{{json .Mounts}}"))
        for mount in mounts:
            name = str(mount.get("Name") or "")
            if name.endswith(("_redis-secrets", "_service-secrets", "_recorder-secrets")):
                readers.setdefault(name.rsplit("_", 1)[1], set()).add(service)
                assert mount["RW"] is False, (service, mount)
    assert readers == {
        "redis-secrets": {"redis"},
        "service-secrets": {"auth", "ingestor-1", "ingestor-2", "gateway"},
        "recorder-secrets": {"recorder"},
    }


def test_the_proxy_cannot_reach_redis(stack: Stack) -> None:
    containers = running_containers(stack)
    proxy, redis = containers["proxy"], containers["redis"]
    networks = {
        name: set(json.loads(docker_inspect(c, "{{json .NetworkSettings.Networks}}")))
        for name, c in (("proxy", proxy), ("redis", redis))
    }
    assert not networks["proxy"] & networks["redis"], networks

    def fetch(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # not -q: GNU wget says nothing at all then, not even why it failed
            ["docker", "exec", proxy, "wget", "-T", "5", "-O", "/dev/null", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The probe works: a gateway, on the proxy's network, answers it.
    assert fetch("http://gateway:8000/healthz").returncode == 0
    refused = fetch("http://redis:6379/")
    assert refused.returncode != 0
    # The name does not even resolve (busybox: "bad address", GNU wget: "unable to resolve").
    assert re.search(r"bad address|unable to resolve|not known", refused.stderr), refused.stderr


# --- the edge's refusals (issue 13) ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["/", "/session", "/api/status", "/auth/", "/v2/login/x"])
def test_a_foreign_host_is_refused(stack: Stack, target: str) -> None:
    """A page whose DNS name was rebound to this machine reaches nothing (each service's check:
    nginx passes Host on)."""
    request = f"GET {target} HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n"
    assert raw_answer(stack, request)[0] == 421


def test_a_foreign_host_cannot_open_the_feed(stack: Stack) -> None:
    request = (
        "GET /ws HTTP/1.1\r\nHost: rebound.example:8080\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://rebound.example:8080\r\n\r\n"
    )
    assert raw_answer(stack, request)[0] == 421


def test_anyone_gets_nothing_of_the_account_and_the_feed_stays_live(
    stack: Stack, http: httpx.Client
) -> None:
    json_only = {"Accept": "application/json"}
    with open_feed(stack) as ws:
        receive_updates(ws, KEY, wanted=1, within=60)
        assert http.post("/logout", headers=json_only).status_code == 401
        assert http.post("/logout?user_id=DEMO01", headers=json_only).status_code == 401
        assert http.get("/user-profile/DEMO01", headers=json_only).status_code == 401
        assert http.get("/authorize", headers=json_only).status_code == 401
        session = http.get("/session").json()
        assert session["logged_in"] is True and "user_id" not in session, session
        # the refused logout changed nothing: the same connection keeps receiving
        ws.send(json.dumps({"op": "unsubscribe", "keys": [KEY], "id": "off"}))
        receive_updates(ws, KEY, wanted=2, within=60)


def test_a_key_that_is_no_instrument_is_answered_unknown_key(stack: Stack) -> None:
    with open_feed(stack) as ws:
        ws.send(json.dumps({"op": "subscribe", "keys": ["NSE_FO|NOSUCH"], "id": "nosuch"}))
        deadline = time.monotonic() + 30
        while True:
            message: dict[str, Any] = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            if message.get("id") == "nosuch":
                break
    assert message["type"] == "error" and message["code"] == "unknown_key", message
    assert message["keys"] == ["NSE_FO|NOSUCH"], message
