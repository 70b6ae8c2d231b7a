"""The exceptions an Upstox call can raise: one base class, one subclass per way it fails.

```
UpstoxError                 status, code (Upstox's error code, e.g. UDAPI100050), message
├── UpstoxAuthError         401/403: the token is invalid or expired; log in again
├── UpstoxRateLimited       429: too many requests (retried by the client before it is raised)
├── UpstoxServerError       5xx: Upstox failed (retried by the client before it is raised)
├── UpstoxRequestError      any other 4xx: the request itself is wrong (bad date range, code...)
└── UpstoxUnavailable       no response at all: connection refused, DNS, timeout
```

Messages are built from the status and Upstox's own code and text, never from the request, so
they never carry an access token, an authorization code or a one-time feed URL.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "UpstoxAuthError",
    "UpstoxError",
    "UpstoxRateLimited",
    "UpstoxRequestError",
    "UpstoxServerError",
    "UpstoxUnavailable",
    "error_from_response",
]


class UpstoxError(Exception):
    """An Upstox call failed. `status` is the HTTP status (None: no response), `code` Upstox's."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class UpstoxAuthError(UpstoxError):
    """401/403: the access token is invalid, expired or lacks the right; retrying cannot help."""


class UpstoxRateLimited(UpstoxError):
    """429: over Upstox's rate limit. `retry_after` is the server's hint in seconds, if given."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class UpstoxServerError(UpstoxError):
    """5xx: a fault on Upstox's side, usually transient."""


class UpstoxRequestError(UpstoxError):
    """Another 4xx: the request was refused as wrong (e.g. UDAPI1148, an invalid date range)."""


class UpstoxUnavailable(UpstoxError):
    """No response: the connection failed or timed out."""


def _first_error(body: Any) -> tuple[str | None, str | None]:
    """(code, message) of an Upstox error body: `error_code` first, then camelCase `errorCode`."""
    if not isinstance(body, dict):
        return None, None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = first.get("error_code") or first.get("errorCode")
        message = first.get("message")
        return (
            str(code) if code is not None else None,
            str(message) if message is not None else None,
        )
    # OAuth-style bodies ({"error": ..., "error_description": ...}) from some gateways.
    error = body.get("error")
    if isinstance(error, str):
        description = body.get("error_description") or body.get("message")
        return error, str(description) if description is not None else None
    return None, None


def error_from_response(
    status: int, body: Any, *, retry_after: float | None = None, secrets: tuple[str, ...] = ()
) -> UpstoxError:
    """The exception for an error response. `secrets` are scrubbed from Upstox's message."""
    code, message = _first_error(body)
    message = message or _default_message(status)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    if status in (401, 403):
        return UpstoxAuthError(message, status=status, code=code)
    if status == 429:
        return UpstoxRateLimited(message, status=status, code=code, retry_after=retry_after)
    if status >= 500:
        return UpstoxServerError(message, status=status, code=code)
    return UpstoxRequestError(message, status=status, code=code)


def _default_message(status: int) -> str:
    if status in (401, 403):
        return "the access token was refused (invalid or expired); log in again"
    if status == 429:
        return "too many requests"
    if status >= 500:
        return "Upstox server error"
    return "request refused"
