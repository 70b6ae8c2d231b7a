"""Upstox's error envelope and the error codes the simulator answers with.

| code | HTTP | when |
| --- | --- | --- |
| UDAPI100050 | 401 | missing, unknown, expired or logged-out bearer token |
| UDAPI100067 | 401 | an extended_token used where it is not permitted (feed) |
| UDAPI10005 | 429 | over a rate limit |
| UDAPI100068 | 400 | login dialog: unknown client_id or redirect_uri not registered |
| UDAPI100069 | 400 | token exchange: client_id / redirect_uri do not match the code |
| UDAPI100016 | 400 | token exchange: wrong client_secret, unknown/expired/reused code |
| UDAPI100036 | 400 | invalid input (missing form field, bad unit/interval/date/exchange) |
| UDAPI100011 | 400 | malformed instrument key |
| UDAPI1148 | 400 | candle date range invalid (from after to, or over the unit's limit) |
| UDAPI10000 | 404/405 | no such endpoint |
| UDAPI100500 | 500 | unexpected error |
| SIM_FEED_URL_USED | 403 | feed handshake with a spent, unknown or expired one-time URL |
| SIM_CONNECTION_LIMIT | 403 | feed handshake over the per-user connection limit |
| SIM_ADMIN_FORBIDDEN | 403 | admin request without the right X-Admin-Key |
"""

from __future__ import annotations

from typing import Final

from starlette.responses import JSONResponse

# Re-exported: the simulator's routes name them from here with its own codes.
from shared.upstox.envelope import INTERNAL as INTERNAL
from shared.upstox.envelope import INVALID_TOKEN as INVALID_TOKEN
from shared.upstox.envelope import envelope as envelope

EXTENDED_TOKEN_NOT_PERMITTED: Final = "UDAPI100067"
TOO_MANY_REQUESTS: Final = "UDAPI10005"
BAD_CLIENT_OR_REDIRECT: Final = "UDAPI100068"
TOKEN_CLIENT_MISMATCH: Final = "UDAPI100069"
INVALID_CREDENTIALS: Final = "UDAPI100016"
INVALID_INPUT: Final = "UDAPI100036"
INVALID_INSTRUMENT_KEY: Final = "UDAPI100011"
INVALID_DATE_RANGE: Final = "UDAPI1148"
NOT_SUPPORTED: Final = "UDAPI10000"
FEED_URL_USED: Final = "SIM_FEED_URL_USED"
CONNECTION_LIMIT: Final = "SIM_CONNECTION_LIMIT"
ADMIN_FORBIDDEN: Final = "SIM_ADMIN_FORBIDDEN"


class EnvelopeError(Exception):
    """Raised by a simulated endpoint: answered with `status` in Upstox's error envelope (not the
    client's `shared.upstox.errors.UpstoxError`, which is what a caller of Upstox gets)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(envelope(code, message), status_code=status)


def invalid_token() -> EnvelopeError:
    return EnvelopeError(401, INVALID_TOKEN, "Invalid token used to access API")
