"""Cross-site request forgery policy, pure: whether a state-changing request may be taken.

Two checks, both required. The Origin a browser sends must be this site's (the Host it asked
for) or an allowed origin: `Origin: null` (sandboxed frames, some redirects) and foreign
origins are refused; no Origin at all is a client that is no browser, or an old one, and is
left to the token. The synchronizer token of the operator's session must come back, as the
`X-CSRF-Token` header (fetch) or the `csrf_token` form field (HTML forms): a page of another
site can neither read it nor, since the session cookie is SameSite=Strict, send that cookie.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from typing import Final
from urllib.parse import urlsplit

__all__ = ["FIELD", "HEADER", "origin_allowed", "token_matches"]

HEADER: Final = "x-csrf-token"
FIELD: Final = "csrf_token"


def origin_allowed(
    origin: str | None, hosts: Iterable[str | None], allowed_origins: Collection[str]
) -> bool:
    """Whether a request's `Origin` is this site: one of `hosts` (Host, X-Forwarded-Host) or
    one of `allowed_origins` (AUTH_CORS_ORIGINS)."""
    if origin is None:
        return True
    if origin.rstrip("/") in allowed_origins:
        return True
    # Compare host names only: a proxy may drop the port from Host, and ports are not sites.
    origin_host = urlsplit(origin).hostname  # None for "null"
    return origin_host is not None and any(
        host and urlsplit(f"//{host}").hostname == origin_host for host in hosts
    )


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not given or not expected:
        return False
    return secrets.compare_digest(given.encode(), expected.encode())
