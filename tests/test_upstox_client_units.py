"""The pure parts of the Upstox client: error mapping, backoff, the login URL, candle rows."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.upstox.backoff import Backoff
from shared.upstox.client import dialog_url, path_param
from shared.upstox.errors import (
    UpstoxAuthError,
    UpstoxRateLimited,
    UpstoxRequestError,
    UpstoxServerError,
    error_from_response,
)
from shared.upstox.models import Candle


def envelope(code: str, message: str, *, camel_only: bool = False) -> dict[str, object]:
    error: dict[str, object] = {"errorCode": code, "message": message}
    if not camel_only:
        error["error_code"] = code
    return {"status": "error", "errors": [error]}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, UpstoxAuthError),
        (403, UpstoxAuthError),
        (429, UpstoxRateLimited),
        (500, UpstoxServerError),
        (503, UpstoxServerError),
        (400, UpstoxRequestError),
        (404, UpstoxRequestError),
    ],
)
def test_status_picks_the_exception(status: int, kind: type[Exception]) -> None:
    error = error_from_response(status, envelope("UDAPI1", "something"))
    assert type(error) is kind
    assert error.status == status
    assert error.code == "UDAPI1"
    assert error.message == "something"


def test_error_code_is_read_before_the_camel_case_twin() -> None:
    body = {"errors": [{"error_code": "UDAPI100050", "errorCode": "OLD", "message": "Invalid"}]}
    assert error_from_response(401, body).code == "UDAPI100050"
    camel = error_from_response(400, envelope("UDAPI1148", "bad range", camel_only=True))
    assert camel.code == "UDAPI1148"
    assert str(camel) == "HTTP 400 UDAPI1148: bad range"


def test_a_body_without_the_envelope_still_gives_a_clear_error() -> None:
    error = error_from_response(502, "<html>bad gateway</html>")
    assert isinstance(error, UpstoxServerError)
    assert error.code is None
    assert error.message == "Upstox server error"


def test_secrets_are_scrubbed_from_upstox_messages() -> None:
    error = error_from_response(
        401, envelope("UDAPI100050", "token secret-123 is invalid"), secrets=("secret-123",)
    )
    assert "secret-123" not in str(error)
    assert error.message == "token *** is invalid"


def test_backoff_grows_to_its_maximum_with_bounded_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5, rng=random.Random(7))
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for base in bases:
        delay = backoff.next_delay()
        assert base * 0.5 <= delay <= base
    assert backoff.attempts == len(bases)
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_backoff_without_jitter_is_exact_and_survives_long_outages() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    for _ in range(2000):
        assert backoff.next_delay() <= 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0.0}, {"initial": 2.0, "maximum": 1.0}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_dialog_url_encodes_every_parameter() -> None:
    url = dialog_url(
        "https://api.upstox.com/", "my key", "http://localhost:8080/exchange-token?x=1&y=2", "s/t"
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://api.upstox.com/v2/login/authorization/dialog"
    )
    assert "my%20key" in parts.query and "+" not in parts.query
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": ["my key"],
        "redirect_uri": ["http://localhost:8080/exchange-token?x=1&y=2"],
        "state": ["s/t"],
    }


def test_path_params_are_percent_encoded() -> None:
    assert path_param("NSE_INDEX|Nifty 50") == "NSE_INDEX%7CNifty%2050"
    assert path_param("a/b") == "a%2Fb"


def test_candle_rows_become_typed_candles() -> None:
    candle = Candle.from_row(["2025-01-02T00:00:00+05:30", 10, 12.5, 9.75, 11, 1000, 7])
    assert candle.ts.isoformat() == "2025-01-02T00:00:00+05:30"
    assert (candle.open, candle.high, candle.low, candle.close) == (10.0, 12.5, 9.75, 11.0)
    assert (candle.volume, candle.oi) == (1000, 7)
    assert Candle.from_row(["2025-01-02T00:00:00+05:30", 1, 2, 0.5, 1.5]).oi == 0
    with pytest.raises(ValueError):
        Candle.from_row(["2025-01-02T00:00:00+05:30", 1, 2])
