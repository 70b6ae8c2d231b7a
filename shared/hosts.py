"""The Host allowlist (`TICKSTREAM_ALLOWED_HOSTS`): which host names a service answers to.

A page on `evil.example` whose DNS name is rebound to 127.0.0.1 reaches a service bound to
loopback, and every same-origin check (the gateway's WebSocket Origin, auth's logout) sees its
own host in both `Origin` and `Host`. Refusing every request whose `Host` is not one of ours,
before any routing, defeats that: a browser always sends the name it resolved.

`HostPolicy` is the pure rule (host names of any port, `*.example.com` for any subdomain, `*`
for anything; `X-Forwarded-Host` is checked too, and only believed from a trusted proxy, as
X-Forwarded-For is). `HostGuard` applies it to every HTTP request and WebSocket handshake of an
ASGI app (421 Misdirected Request, a short plain body); `handshake_admitted` is the same check
for a WebSocket handshake served outside ASGI (the gateway's `/ws`). Refusals are logged without
echoing what was sent (its `repr`, cut short), at INFO once per hundred.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "LOOPBACK_HOSTS",
    "MISDIRECTED",
    "MISDIRECTED_TEXT",
    "HostGuard",
    "HostPolicy",
    "handshake_admitted",
    "host_name",
    "normalise_entry",
    "policy_for",
]

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
MISDIRECTED: Final = 421
MISDIRECTED_TEXT: Final = "misdirected request: this host name is not served here\n"
_BODY: Final = MISDIRECTED_TEXT.encode()

# RFC 3986 reg-name as browsers send it (letters, digits, hyphen, underscore), dot-separated
# labels that are never empty; IPv4 addresses fit it too.
_LABELS = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")
_PORT = re.compile(r"[0-9]{0,5}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _literal(text: str) -> str | None:
    """A name or an address in its one comparable form (lower case, no trailing dot, IPv6
    compressed), or None when it is neither."""
    text = text.lower().removesuffix(".")
    if _LABELS.fullmatch(text):
        return text
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def host_name(header: str | None) -> str | None:
    """The host of a `Host` (or X-Forwarded-Host) value, normalised; None if it is malformed.

    `name`, `name:port`, `[v6]` and `[v6]:port`; an IPv6 address without brackets is malformed
    (its colons are taken for a port), as it is in HTTP.
    """
    if header is None:
        return None
    text = header.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, _, port = text.partition(":")
    if not _PORT.fullmatch(port) or not _LABELS.fullmatch(name.lower().removesuffix(".")):
        return None
    return name.lower().removesuffix(".")


def normalise_entry(entry: str) -> str:
    """One `TICKSTREAM_ALLOWED_HOSTS` entry in its comparable form; ValueError if it is not a
    host name, an address, `*.suffix` or `*`."""
    text = entry.strip()
    if text == "*":
        return text
    if text.startswith("*."):
        suffix = _literal(text[2:])
        if suffix is None or ":" in suffix:
            raise ValueError(f"{entry!r}: a wildcard is `*.` and a domain name")
        return "*." + suffix
    bracketed = text.startswith("[") and text.endswith("]")
    found = _literal(text[1:-1] if bracketed else text)
    if bracketed and found is not None and ":" not in found:
        found = None  # brackets hold an IPv6 address only
    if found is None:
        raise ValueError(f"{entry!r} is not a host name or address (no scheme, port or path)")
    return found


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts are served and whose X-Forwarded-Host is believed. Pure."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()  # ".example.com" for `*.example.com`
    any_host: bool = False
    proxies: tuple[Network, ...] = ()
    any_proxy: bool = False

    @classmethod
    def build(cls, hosts: Iterable[str], trusted_proxies: Iterable[str] = ()) -> HostPolicy:
        entries = [normalise_entry(entry) for entry in hosts]
        proxies = list(trusted_proxies)
        return cls(
            names=frozenset(e for e in entries if not e.startswith("*")),
            suffixes=tuple(e[1:] for e in entries if e.startswith("*.")),
            any_host="*" in entries,
            proxies=tuple(ipaddress.ip_network(p, strict=False) for p in proxies if p != "*"),
            any_proxy="*" in proxies,
        )

    def allows(self, header: str | None) -> bool:
        """Whether one Host value names a host we serve."""
        if self.any_host:
            return True
        host = host_name(header)
        if host is None:
            return False
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` (the TCP peer's address) is a proxy whose forwarded headers count."""
        if self.any_proxy:
            return True
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.proxies)

    def admits(self, host: str | None, forwarded: Sequence[str], peer: str | None) -> bool:
        """A request with this Host, these X-Forwarded-Host values, from this peer."""
        if self.any_host:
            return True
        if not self.allows(host):
            return False
        if not forwarded or not self.trusts(peer):
            return True  # nobody we trust forwarded it: the header says nothing
        return all(self.allows(part) for value in forwarded for part in value.split(","))


@functools.lru_cache(maxsize=8)
def _cached(hosts: tuple[str, ...], proxies: tuple[str, ...]) -> HostPolicy:
    return HostPolicy.build(hosts, proxies)


class _HostSettings(Protocol):
    @property
    def trusted_proxies(self) -> list[str]: ...

    def allowed_hosts(self) -> list[str]: ...


def policy_for(settings: _HostSettings, *, behind_proxies: bool = True) -> HostPolicy:
    """The policy of a service's settings (built once per distinct setting). The edge (the
    front) is behind no proxy: it believes no X-Forwarded-Host."""
    proxies = tuple(settings.trusted_proxies) if behind_proxies else ()
    return _cached(tuple(settings.allowed_hosts()), proxies)


class _Refusals:
    """Logs refused hosts: each at DEBUG, the first and every hundredth at INFO, so a flood of
    foreign Host headers cannot flood the log."""

    def __init__(self) -> None:
        self.count = 0

    def note(self, host: str | None) -> None:
        self.count += 1
        shown = "(none)" if host is None else repr(host[:80])
        level = logging.INFO if self.count == 1 or self.count % 100 == 0 else logging.DEBUG
        logger.log(
            level,
            "refused a request for host %s (not in TICKSTREAM_ALLOWED_HOSTS; %d refused so far)",
            shown,
            self.count,
        )


_refusals = _Refusals()


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key.lower() == name]


class _Headers(Protocol):
    def get_all(self, key: str) -> list[str]: ...


def _one(values: Sequence[str]) -> str | None:
    """The Host header's value; two of them make the request malformed (RFC 9112 3.2)."""
    return values[0] if len(values) == 1 else None


def handshake_admitted(
    settings: _HostSettings, headers: _Headers, transport: asyncio.BaseTransport | None
) -> bool:
    """The check for a WebSocket handshake parsed by `websockets` (its `Headers`) on this
    transport, outside ASGI; logs a refusal."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    host = _one(headers.get_all("Host"))
    address = peer[0] if isinstance(peer, tuple) else None
    if policy_for(settings).admits(host, headers.get_all("X-Forwarded-Host"), address):
        return True
    _refusals.note(host)
    return False


class HostGuard:
    """ASGI middleware: requests and WebSocket handshakes for a host not in `policy` are answered
    421 before the app sees them. Put it outside anything that rewrites `scope["client"]` from
    X-Forwarded-For: it judges forwarded headers by the TCP peer."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.policy.any_host:
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        host = _one(_header_values(headers, b"host"))
        client = scope.get("client")
        peer = client[0] if client else None
        if self.policy.admits(host, _header_values(headers, b"x-forwarded-host"), peer):
            await self.app(scope, receive, send)
            return
        _refusals.note(host)
        await _refuse(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_BODY)).encode()),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": MISDIRECTED, "headers": headers})
        await send({"type": "http.response.body", "body": _BODY})
        return
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": MISDIRECTED, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": _BODY})
    else:
        await send({"type": "websocket.close", "code": 1008})
