"""DNS rebinding and framing through the running system (`tickstream dev`'s processes).

A page on evil.example whose name is rebound to the machine reaches the front with
`Host: evil.example:<port>` and `Origin: http://evil.example:<port>`: before the allowlist it
read /session, logged the operator out and opened /ws as if it were the dashboard. Every service
refuses such a request (421) before routing, at the front and when reached directly; every page
refuses to be framed.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.stack import Stack, running_stack

EVIL = "evil.example"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as running:
        yield running


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def request(url: str, method: str, path: str, host: str) -> httpx.Response:
    """`method path` at `url`'s server with this Host, as a rebound page's fetch sends it."""
    origin = f"http://{host}"
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as http:
        return http.request(method, path, headers={"Host": host, "Origin": origin})


def handshake_status(url: str, host: str, path: str = "/ws") -> int:
    """The status a WebSocket handshake for `host` gets at `url`'s server (101: opened)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        f"Origin: http://{host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    address = urlsplit(url)
    with socket.create_connection((address.hostname, _port(url)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/session"), ("POST", "/logout"), ("GET", "/api/status")],
)
def test_a_rebound_page_is_refused_at_the_front(stack: Stack, method: str, path: str) -> None:
    port = _port(stack.front_url)
    refused = request(stack.front_url, method, path, f"{EVIL}:{port}")
    assert refused.status_code == 421, refused.text
    assert EVIL not in refused.text
    served = request(stack.front_url, "GET", "/", f"localhost:{port}")
    assert served.status_code == 200


def test_a_rebound_page_cannot_open_the_websocket(stack: Stack) -> None:
    port = _port(stack.front_url)
    assert handshake_status(stack.front_url, f"{EVIL}:{port}") == 421
    assert handshake_status(stack.front_url, f"127.0.0.1:{port}") == 101


def test_every_service_refuses_a_foreign_host_when_reached_directly(stack: Stack) -> None:
    for name, url in stack.dev.urls.items():
        if not url.startswith("http"):
            continue  # Redis
        port = _port(url)
        path = "/_front/healthz" if name == "front" else "/healthz"
        assert request(url, "GET", path, f"{EVIL}:{port}").status_code == 421, name
        assert request(url, "GET", path, f"127.0.0.1:{port}").status_code == 200, name
    gateway = stack.gateway_urls[0]
    assert handshake_status(gateway, f"{EVIL}:{_port(gateway)}") == 421


@pytest.mark.parametrize(
    "path",
    [
        "/",  # the dashboard
        "/auth/",  # auth's page
        "/v2/login/authorization/dialog?response_type=code&client_id=x&redirect_uri=y",
        "/_front/healthz",  # the front's own answers
        "/api/../metrics",
        "/nope-not-here",
    ],
)
def test_no_page_can_be_framed(stack: Stack, path: str) -> None:
    port = _port(stack.front_url)
    answer = request(stack.front_url, "GET", path, f"localhost:{port}")
    assert answer.headers.get_list("x-frame-options") == ["DENY"], (path, answer.status_code)
    policies = answer.headers.get_list("content-security-policy")
    assert any("frame-ancestors 'none'" in policy for policy in policies), policies
