"""Cross-site request forgery policy, pure: whether a state-changing request may be taken.

Two checks, both required. The Origin a browser sends must be this site's (the host and port it
asked for: `shared.origins`, the rule every service uses) or an allowed origin: `Origin: null`
(sandboxed frames, some redirects) and foreign origins are refused; no Origin at all is a
client that is no browser, or an old one, and is left to the token. The synchronizer token of
the operator's session must come back, as the `X-CSRF-Token` header (fetch) or the `csrf_token`
form field (HTML forms): a page of another site can neither read it nor, since the session
cookie is SameSite=Strict, send that cookie.
"""

from __future__ import annotations

import secrets
from typing import Final

from shared.origins import origin_allowed

__all__ = ["FIELD", "HEADER", "origin_allowed", "token_matches"]

HEADER: Final = "x-csrf-token"
FIELD: Final = "csrf_token"


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not given or not expected:
        return False
    return secrets.compare_digest(given.encode(), expected.encode())
