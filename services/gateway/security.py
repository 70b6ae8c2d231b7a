"""Who may open a WebSocket: the origin allowlist and the optional API keys. Pure functions."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr


def origin_allowed(origin: str | None, hosts: Sequence[str | None], allowed: Sequence[str]) -> bool:
    """Whether a handshake with this `Origin` header may proceed.

    Clients that send no Origin (not a browser) are allowed; browsers always send one. A browser
    page is allowed when it comes from the gateway's own site (the origin's host:port equals the
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


def presented_key(query_string: str, authorization: str | None) -> str | None:
    """The API key a client presents: `Authorization: Bearer <key>` or `?api_key=<key>`."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    values = parse_qs(query_string).get("api_key")
    return values[0] if values else None


def key_accepted(presented: str | None, keys: Sequence[SecretStr]) -> bool:
    """Whether `presented` is one of `keys` (constant-time); no keys configured: auth is off."""
    if not keys:
        return True
    if not presented:
        return False
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    return matched
