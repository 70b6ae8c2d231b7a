"""The simulated app's users, access tokens and one-time codes (pure state, time passed in).

Tokens and codes are opaque random hex strings (not JWT-shaped); an access token lives until the
next 03:30 IST, an extended token a year. Codes are single use: the first attempt spends them,
whether or not it succeeds (as Upstox documents for auth codes).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from services.simulator.clock import token_expiry_ms

EXTENDED_TOKEN_LIFETIME_MS: Final = 365 * 86_400_000
AUTH_CODE_LIFETIME_MS: Final = 10 * 60_000
FEED_CODE_LIFETIME_MS: Final = 5 * 60_000


@dataclass(frozen=True)
class User:
    user_id: str
    user_name: str
    email: str
    user_type: str = "individual"
    exchanges: tuple[str, ...] = ("NSE", "NFO", "BSE", "CDS", "BFO", "BCD", "MCX")
    products: tuple[str, ...] = ("D", "CO", "I", "MTF")
    order_types: tuple[str, ...] = ("MARKET", "LIMIT", "SL", "SL-M")
    poa: bool = False
    ddpi: bool = True
    is_active: bool = True

    def profile(self) -> dict[str, object]:
        """The `data` of `/v2/user/profile`."""
        return {
            "email": self.email,
            "exchanges": list(self.exchanges),
            "products": list(self.products),
            "broker": "UPSTOX",
            "user_id": self.user_id,
            "user_name": self.user_name,
            "order_types": list(self.order_types),
            "user_type": self.user_type,
            "poa": self.poa,
            "ddpi": self.ddpi,
            "is_active": self.is_active,
        }


DEMO_USERS: Final = (
    User("DEMO01", "Demo Trader", "demo@example.com"),
    User("DEMO02", "Second Demo Trader", "demo2@example.com"),
)


def new_secret() -> str:
    return secrets.token_hex(24)


@dataclass
class TokenRecord:
    user: User
    expires_ms: int
    extended: bool = False
    demo: bool = False


class TokenStore:
    """Access and extended tokens: issue, resolve, revoke, expire."""

    def __init__(self, demo_token: str | None = None, demo_user: User = DEMO_USERS[0]) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        if demo_token:
            self._tokens[demo_token] = TokenRecord(demo_user, expires_ms=1 << 62, demo=True)

    def issue(self, user: User, now_ms: int) -> tuple[str, str]:
        access, extended = new_secret(), new_secret()
        self._tokens[access] = TokenRecord(user, token_expiry_ms(now_ms))
        self._tokens[extended] = TokenRecord(
            user, now_ms + EXTENDED_TOKEN_LIFETIME_MS, extended=True
        )
        return access, extended

    def resolve(self, token: str, now_ms: int) -> TokenRecord | None:
        record = self._tokens.get(token)
        if record is None or record.expires_ms <= now_ms:
            return None
        return record

    def revoke(self, token: str) -> bool:
        return self._tokens.pop(token, None) is not None

    def expire_all(self, now_ms: int, include_demo: bool = True) -> int:
        expired = 0
        for record in self._tokens.values():
            if record.expires_ms > now_ms and (include_demo or not record.demo):
                record.expires_ms = now_ms
                expired += 1
        return expired

    def prune(self, now_ms: int) -> None:
        for token in [token for token, rec in self._tokens.items() if rec.expires_ms <= now_ms]:
            if not self._tokens[token].demo:
                del self._tokens[token]


@dataclass(frozen=True)
class AuthCode:
    user: User
    client_id: str
    redirect_uri: str
    expires_ms: int


@dataclass(frozen=True)
class FeedGrant:
    """What a one-time feed URL stands for: the user, and the token that authorised it."""

    user: User
    token: str
    expires_ms: int


T = TypeVar("T", AuthCode, FeedGrant)


class OneTimeCodes(Generic[T]):
    """Single-use codes: `take` returns the value once, then forgets the code."""

    def __init__(self) -> None:
        self._codes: dict[str, T] = {}

    def issue(self, value: T) -> str:
        code = secrets.token_hex(16)
        self._codes[code] = value
        return code

    def take(self, code: str, now_ms: int) -> T | None:
        value = self._codes.pop(code, None)
        if value is None or value.expires_ms <= now_ms:
            return None
        return value

    def prune(self, now_ms: int) -> None:
        for code in [code for code, value in self._codes.items() if value.expires_ms <= now_ms]:
            del self._codes[code]
