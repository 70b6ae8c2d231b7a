"""Failure classification: real exception objects in, reason / message / is-auth out."""

from __future__ import annotations

import errno

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHeader,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
)
from websockets.frames import Close
from websockets.http11 import Response

from services.ingestor.failures import (
    REASONS,
    UPSTREAM_ERRORS,
    FeedStalled,
    UpstreamError,
    UpstreamFailure,
    classify,
)
from shared.upstox.errors import (
    UpstoxAuthError,
    UpstoxServerError,
    UpstoxUnavailable,
    error_from_response,
)

URL = "wss://feed.example/market-data-feeder/v3?requestId=r1&code=one-time-secret"
TOKEN = "access-token-secret"


def status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "", Headers()))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            UpstoxAuthError("the access token was refused", status=401),
            UpstreamFailure("auth", "Upstox refused the access token (HTTP 401)", True, 401),
        ),
        (
            UpstoxServerError("Upstox server error", status=503, code="UDAPI100500"),
            UpstreamFailure(
                "unavailable",
                "feed authorize failed: HTTP 503 UDAPI100500: Upstox server error",
                False,
                503,
            ),
        ),
        (
            UpstoxUnavailable("connection refused"),
            UpstreamFailure("unavailable", "feed authorize failed: connection refused"),
        ),
        (
            status(401),
            UpstreamFailure("auth", "Upstox refused the access token (HTTP 401)", True, 401),
        ),
        (
            status(403),
            UpstreamFailure("auth", "Upstox refused the access token (HTTP 403)", True, 403),
        ),
        (
            status(502),
            UpstreamFailure("handshake", "the feed refused the connection: HTTP 502", False, 502),
        ),
        (
            ConnectionClosedOK(Close(1000, "logged out"), Close(1000, "logged out"), True),
            UpstreamFailure("closed", "the feed connection closed (code 1000)"),
        ),
        (
            ConnectionClosedError(Close(1008, "token expired"), None),
            UpstreamFailure("closed", "the feed connection was lost (code 1008 token expired)"),
        ),
        (
            ConnectionClosedError(None, None),
            UpstreamFailure("closed", "the feed connection was lost (code None )"),
        ),
        (
            InvalidURI(URL, "not a WebSocket URI"),
            UpstreamFailure("handshake", "feed authorize returned an unusable URL"),
        ),
        (
            InvalidHeader("Location", URL),
            UpstreamFailure("handshake", "the feed handshake failed: InvalidHeader"),
        ),
        (
            InvalidMessage("did not receive a valid HTTP response"),
            UpstreamFailure("handshake", "the feed handshake failed: InvalidMessage"),
        ),
        (
            PayloadTooBig(1 << 30, 1 << 24),
            UpstreamFailure("handshake", "the feed handshake failed: PayloadTooBig"),
        ),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            UpstreamFailure("unavailable", "cannot reach the feed: Connection refused"),
        ),
        (
            TimeoutError(),
            UpstreamFailure("unavailable", "cannot reach the feed: TimeoutError"),
        ),
        (
            FeedStalled(21.04),
            UpstreamFailure(
                "stalled", "the feed is still silent (21.0 s): reconnecting", quiet=True
            ),
        ),
    ],
    ids=lambda value: type(value).__name__,
)
def test_each_way_a_feed_attempt_ends(error: UpstreamError, expected: UpstreamFailure) -> None:
    assert isinstance(error, UPSTREAM_ERRORS)
    failure = classify(error)
    assert failure == expected
    assert failure.reason in REASONS


def test_messages_never_carry_the_feed_url_or_a_token() -> None:
    scrubbed = error_from_response(
        500, {"errors": [{"message": f"bad token {TOKEN} for {URL}"}]}, secrets=(TOKEN, URL)
    )
    for error in (
        InvalidURI(URL, "not a WebSocket URI"),
        InvalidHeader("Location", URL),
        InvalidMessage(f"bad response to GET {URL}"),
        scrubbed,
    ):
        message = classify(error).message
        assert URL not in message and "code=" not in message and TOKEN not in message


def test_only_a_refused_token_asks_for_a_new_login() -> None:
    assert classify(UpstoxAuthError("refused", status=403)).is_auth
    assert not classify(UpstoxServerError("down", status=500)).is_auth
    assert not classify(status(500)).is_auth
    assert not classify(ConnectionClosedError(Close(1008, "policy"), None)).is_auth
