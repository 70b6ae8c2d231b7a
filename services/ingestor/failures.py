"""What went wrong upstream, as data: one pure function from an exception to a failure.

`classify` names the way a feed attempt ended (authorize refused or failed, handshake refused,
connection lost or closed, network unreachable, closed by the stall watchdog) for the metric,
the log and the retry policy, the way the gateway's API turns Upstox's REST errors into
answers. It owns the wording of those log lines: none may carry the one-time feed URL (its
query holds a code) or a token, so exceptions whose text could hold them are described by their
type alone.

It must NOT count, log, sleep or decide a backoff: the upstream session does that with the
result, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_never

from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from shared.upstox.errors import UpstoxAuthError, UpstoxError

__all__ = [
    "REASONS",
    "UPSTREAM_ERRORS",
    "FailureReason",
    "FeedStalled",
    "UpstreamError",
    "UpstreamFailure",
    "classify",
]

FailureReason = Literal["auth", "unavailable", "handshake", "closed", "stalled"]
REASONS: tuple[FailureReason, ...] = ("auth", "unavailable", "handshake", "closed", "stalled")


class FeedStalled(Exception):
    """The stall watchdog closed a connection that sent nothing while data was due."""

    def __init__(self, silent_for: float) -> None:
        super().__init__(f"no feed frame for {silent_for:.1f} s")
        self.silent_for = silent_for


# How a feed attempt can end: from authorize (UpstoxError), the WebSocket library (every
# websockets error, a connection closed cleanly included), the network (TimeoutError too), or
# the stall watchdog.
UPSTREAM_ERRORS = (UpstoxError, WebSocketException, OSError, FeedStalled)
UpstreamError = UpstoxError | WebSocketException | OSError | FeedStalled


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    reason: FailureReason  # the `reason` label of tickstream_ingestor_upstream_failures
    message: str  # for the log: never the feed URL, never a token
    is_auth: bool = False  # the token was refused: a new login is needed, not a retry
    status: int | None = None  # the HTTP status, when there was a response
    quiet: bool = False  # an info line, not a warning: the watchdog already warned of the stall


def classify(error: UpstreamError) -> UpstreamFailure:
    """How a feed attempt ended. A connection that closed cleanly ends with its
    `ConnectionClosedOK` (the read loop ends without raising it)."""
    if isinstance(error, UpstoxError):
        if isinstance(error, UpstoxAuthError):
            return _refused_token(error.status)
        # Upstox's messages are scrubbed of secrets by the client (shared.upstox.errors).
        return UpstreamFailure(
            "unavailable", f"feed authorize failed: {error}", status=error.status
        )
    if isinstance(error, WebSocketException):
        return _websocket(error)
    if isinstance(error, OSError):
        return UpstreamFailure(
            "unavailable", f"cannot reach the feed: {error.strerror or type(error).__name__}"
        )
    if isinstance(error, FeedStalled):
        return UpstreamFailure(
            "stalled",
            f"the feed is still silent ({error.silent_for:.1f} s): reconnecting",
            quiet=True,
        )
    assert_never(error)


def _websocket(error: WebSocketException) -> UpstreamFailure:
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status in (401, 403):
            return _refused_token(status)
        return UpstreamFailure(
            "handshake", f"the feed refused the connection: HTTP {status}", status=status
        )
    if isinstance(error, ConnectionClosedOK):
        code = error.rcvd.code if error.rcvd else None
        return UpstreamFailure("closed", f"the feed connection closed (code {code})")
    if isinstance(error, ConnectionClosed):
        code, why = (error.rcvd.code, error.rcvd.reason) if error.rcvd else (None, "")
        return UpstreamFailure("closed", f"the feed connection was lost (code {code} {why})")
    if isinstance(error, InvalidURI):
        # Its text is the URL itself.
        return UpstreamFailure("handshake", "feed authorize returned an unusable URL")
    # Header errors quote the header, which may echo the request: the type says enough.
    return UpstreamFailure("handshake", f"the feed handshake failed: {type(error).__name__}")


def _refused_token(status: int | None) -> UpstreamFailure:
    return UpstreamFailure(
        "auth", f"Upstox refused the access token (HTTP {status})", is_auth=True, status=status
    )
