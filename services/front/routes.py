"""The front's route table and header rules: pure functions, no I/O.

| front path | upstream | upstream path |
| --- | --- | --- |
| `/authorize`, `/exchange-token`, `/session`, `/logout` | auth | same |
| `/user-profile/...` | auth | same |
| `/auth`, `/auth/...` | auth | prefix `/auth` removed (`/auth/` is auth's own page `/`) |
| `/v2/login/...` | simulator (when configured) | same: the simulated Upstox login dialog |
| `/api/ticks/...`, `/api/candles/...`, `/api/recording/...` | recorder (when configured) | same |
| `/metrics`, `/metrics/...`, `/token/...` | none: 404 (callers inside reach each service) | |
| everything else: `/`, `/static/...`, `/api/...`, `/ws`, `/healthz`, ... | gateways | same |

Before the table, `edge_refusal` turns away a request target that an upstream could read as
another path than the one routed: not origin-form (`@host/x`, `http://host/x`, `*`), or a path
with a dot segment or an empty one (`/api/../metrics`, `/api/%2e%2e/metrics`, `//metrics`): 400.
An internal path is refused (404) both as the client spelled it and as it reaches the upstream
(`/auth/metrics` is auth's `/metrics`). Paths are case-sensitive, as every upstream's routes:
`/METRICS` is not `/metrics` and goes to the gateways (which have no such route).

Compose's nginx serves the same table and refusals, so a browser sees one origin either way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# The front's own liveness path (everything else is proxied); `tickstream dev` polls it.
HEALTH_PATH = "/_front/healthz"
# Served to callers inside the topology, never to the outside through the edge: each service's
# metrics (for scrapers) and auth's token route (for the ingestor and gateways).
INTERNAL_PATHS = frozenset({"/metrics"})
INTERNAL_PATH_PREFIXES = ("/metrics/", "/token/")

AUTH_PATHS = frozenset({"/authorize", "/exchange-token", "/session", "/logout"})
AUTH_PATH_PREFIXES = ("/user-profile/",)
AUTH_PAGE_PREFIX = "/auth"
SIMULATOR_PATH_PREFIXES = ("/v2/login/",)
# The recording's queries; the rest of /api (instruments, history, status) is the gateways'.
RECORDER_PATH_PREFIXES = ("/api/ticks/", "/api/candles/", "/api/recording/")

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded by a proxy.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The WebSocket handshake headers belong to each leg: the front's client library makes its own.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"host",
        b"origin",
    }
)
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# Never accepted from outside: the service-to-service key (auth's `X-Internal-Key`) is only for
# callers inside the topology, and the edge is where outside ends.
EDGE_DROPPED = FORWARDED | {b"x-internal-key"}

Headers = list[tuple[bytes, bytes]]


class Upstream(enum.Enum):
    AUTH = "auth"
    SIMULATOR = "simulator"
    RECORDER = "recorder"
    GATEWAY = "gateway"


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    path: str
    stripped: str = ""  # the prefix removed from the client's path to make `path`


@dataclass(frozen=True)
class Refusal:
    """The edge's own answer to a request it does not route."""

    status: int
    text: str


NOT_ORIGIN_FORM = Refusal(400, "origin-form request targets only")
AMBIGUOUS_PATH = Refusal(400, "dot segments and empty segments are refused")
NOT_FOUND = Refusal(404, "not found")


def is_internal(path: str) -> bool:
    return path in INTERNAL_PATHS or path.startswith(INTERNAL_PATH_PREFIXES)


def edge_refusal(raw_path: str, path: str) -> Refusal | None:
    """Why the edge refuses a request, or None to route it.

    `raw_path` is the request target's path as sent (before `?`), `path` the same percent-decoded,
    as the server gives both. An upstream must see the very path the table routed: no dot
    segments for it to resolve and no empty ones to merge, encoded or not; and no other host.
    """
    if not raw_path.startswith("/"):
        return NOT_ORIGIN_FORM
    segments = path.split("/")[1:]
    # a trailing slash leaves one empty segment at the end, which every upstream keeps as is
    if any(segment in (".", "..") for segment in segments) or "" in segments[:-1]:
        return AMBIGUOUS_PATH
    return None


def admit(
    raw_path: str, path: str, *, has_simulator: bool = True, has_recorder: bool = True
) -> Target | Refusal:
    """Where a request goes, or the edge's refusal: an internal path is refused as the upstream
    would get it, so a prefix the table removes (`/auth/metrics`) hides nothing."""
    refusal = edge_refusal(raw_path, path)
    if refusal is not None:
        return refusal
    target = route(path, has_simulator=has_simulator, has_recorder=has_recorder)
    return NOT_FOUND if is_internal(target.path) else target


def route(path: str, *, has_simulator: bool = True, has_recorder: bool = True) -> Target:
    """Where a request for `path` goes, and the path it gets there.

    Without a recorder its paths stay with the gateways, which answer them 404, as for any
    other path they do not serve."""
    if path in AUTH_PATHS or path.startswith(AUTH_PATH_PREFIXES):
        return Target(Upstream.AUTH, path)
    if path == AUTH_PAGE_PREFIX or path.startswith(AUTH_PAGE_PREFIX + "/"):
        return Target(Upstream.AUTH, path.removeprefix(AUTH_PAGE_PREFIX) or "/", AUTH_PAGE_PREFIX)
    if has_simulator and path.startswith(SIMULATOR_PATH_PREFIXES):
        return Target(Upstream.SIMULATOR, path)
    if has_recorder and path.startswith(RECORDER_PATH_PREFIXES):
        return Target(Upstream.RECORDER, path)
    return Target(Upstream.GATEWAY, path)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in `Connection:`: hop-by-hop for this message too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return tokens


def end_to_end(
    headers: Sequence[tuple[bytes, bytes]], drop: frozenset[bytes] = HOP_BY_HOP
) -> Headers:
    """The headers a proxy forwards: without hop-by-hop ones (and those `Connection` names)."""
    skip = drop | connection_tokens(headers)
    return [(name, value) for name, value in headers if name.lower() not in skip]


@dataclass(frozen=True)
class ClientInfo:
    """What the front knows about the client, for the X-Forwarded-* headers."""

    address: str | None
    scheme: str  # "http" or "https", as the client spoke to the front
    host: str | None


def forwarded_headers(client: ClientInfo) -> Headers:
    """X-Forwarded-For, -Proto and -Host as the front saw the client.

    The front is the edge: whatever X-Forwarded-For a client sent is its own claim, so it is
    replaced by the peer's address, never extended. Appended, a loopback client (itself a trusted
    proxy to the services) could pick the address the gateways' per-address caps and the history
    limit count it under."""
    result: Headers = []
    if client.address:
        result.append((b"x-forwarded-for", client.address.encode("latin-1")))
    result.append((b"x-forwarded-proto", client.scheme.encode("latin-1")))
    if client.host:
        result.append((b"x-forwarded-host", client.host.encode("latin-1")))
    return result


def request_headers(headers: Sequence[tuple[bytes, bytes]], client: ClientInfo) -> Headers:
    """Headers for the upstream request: end-to-end ones (less `X-Internal-Key`) plus fresh
    X-Forwarded-*.

    `Host` is kept as the client sent it (nginx's `proxy_set_header Host $host`), so links and
    redirects an upstream builds from it point back at the front.
    """
    kept = [(n, v) for n, v in end_to_end(headers) if n.lower() not in EDGE_DROPPED]
    return kept + forwarded_headers(client)


def websocket_request_headers(
    headers: Sequence[tuple[bytes, bytes]], client: ClientInfo
) -> Headers:
    """Headers for the upstream WebSocket handshake (cookies, auth, user agent, forwarding)."""
    kept = [
        (n, v)
        for n, v in end_to_end(headers, HOP_BY_HOP | WEBSOCKET_HANDSHAKE)
        if n.lower() not in EDGE_DROPPED
    ]
    return kept + forwarded_headers(client)


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def rewrite_location(location: bytes, upstream_base: str, front_base: str) -> bytes:
    """An absolute redirect to the upstream's own address is turned into one to the front.

    What nginx's `proxy_redirect default` does; relative redirects and redirects elsewhere (the
    real Upstox dialog, say) are left alone.
    """
    text = location.decode("latin-1")
    base = upstream_base.rstrip("/")
    if text == base or text.startswith(base + "/"):
        return (front_base.rstrip("/") + text[len(base) :]).encode("latin-1")
    return location


# Close codes that may not be sent in a close frame (RFC 6455 section 7.4.1): 1005 "no status",
# 1006 "abnormal closure" (the peer vanished), 1015 "TLS failure".
def relay_close_to_client(code: int | None) -> int:
    """The code to close the client with when the upstream closed with `code`.

    A gateway that vanished (1006, e.g. killed) becomes 1012 "service restart": reconnect.
    """
    if code is None or code in (1006, 1015):
        return 1012
    return 1000 if code == 1005 else code


def relay_close_to_upstream(code: int | None) -> int:
    """The code to close the upstream with when the client closed with `code`.

    A client that vanished becomes 1001 "going away".
    """
    if code is None or code in (1006, 1015):
        return 1001
    return 1000 if code == 1005 else code
