"""Whether a browser request comes from this site: the one `Origin` rule of every service (the
gateway's WebSocket handshake and sign-in, auth's state-changing requests). Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

__all__ = ["origin_allowed"]


def origin_allowed(
    origin: str | None, hosts: Iterable[str | None], allowed: Collection[str]
) -> bool:
    """Whether a request with this `Origin` header may proceed.

    Clients that send no Origin (not a browser) are allowed; browsers always send one. A browser
    page is allowed when it comes from this service's own site (the origin's host:port equals the
    Host header, or X-Forwarded-Host behind a proxy, both of which a page cannot forge) or from
    an origin in `allowed` ('*' allows any).
    """
    if origin is None:
        return True
    origin = origin.strip()
    if "*" in allowed or origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default_port = 443 if parts.scheme == "https" else 80
    origin_host = _host_port(parts.hostname, parts.port or default_port)
    for host in hosts:
        if host and _normalise_host(host.split(",")[0].strip(), default_port) == origin_host:
            return True
    return False


def _host_port(hostname: str, port: int) -> str:
    return f"{hostname.lower()}:{port}"


def _normalise_host(host: str, default_port: int) -> str | None:
    try:
        parts = urlsplit("//" + host)
        port = parts.port or default_port
    except ValueError:
        return None
    return _host_port(parts.hostname, port) if parts.hostname else None
