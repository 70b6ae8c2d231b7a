"""Viewer tokens: verifying and minting the signed JWTs a viewer presents, and what a token's
`keys` claim lets its holder subscribe. Pure: no I/O (the gateway fetches an identity
provider's key set itself and hands the keys in).

Modelled on Centrifugo's connection tokens: HS256 with a shared secret, or RS256/ES256 with a
key from the identity provider's JWKS. Each verification names its algorithms explicitly and
each key family has its own list, so `alg: none` is never accepted and a public key can never
be used as an HMAC secret (the RS256-to-HS256 confusion). `sub` and `exp` are required, `aud`
is checked when an audience is configured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt
from jwt.exceptions import InvalidSubjectError

__all__ = [
    "HMAC_ALGORITHMS",
    "JWKS_ALGORITHMS",
    "KeyScope",
    "Reason",
    "TokenRefused",
    "Viewer",
    "header_of",
    "mint",
    "parse_ttl",
    "verify_hmac",
    "verify_with_jwk",
]

HMAC_ALGORITHMS: Final = ("HS256",)
JWKS_ALGORITHMS: Final = ("RS256", "ES256")
MIN_SECRET_BYTES: Final = 32  # HS256's digest size: PyJWT calls a shorter secret insecure
MAX_TOKEN_LENGTH: Final = 4000  # fits in one cookie

Reason = Literal[
    "missing",
    "malformed",
    "expired",
    "bad_signature",
    "wrong_audience",
    "bad_claims",
    "unsupported_algorithm",
    "unknown_key_id",
    "jwks_unavailable",
]

_MESSAGES: Final[Mapping[Reason, str]] = {
    "missing": "a viewer token is required (Authorization: Bearer, ?token= or the sign-in cookie)",
    "malformed": "the credential is neither a valid token nor an API key of this deployment",
    "expired": "the token has expired",
    "bad_signature": "the token's signature is not valid",
    "wrong_audience": "the token was issued for another audience",
    "bad_claims": "the token lacks a required claim (sub, exp) or has a malformed one",
    "unsupported_algorithm": "the token's algorithm is not accepted here",
    "unknown_key_id": "the token was signed with a key the identity provider does not list",
    "jwks_unavailable": "the identity provider's key set could not be fetched; try again later",
}


class TokenRefused(Exception):
    """A credential that does not admit its holder; `reason` says why (safe to show: it never
    contains the token)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: Reason = reason
        self.message = _MESSAGES[reason]


@dataclass(frozen=True, slots=True)
class KeyScope:
    """The instrument keys a token allows: exact keys, and whole segments (`NSE_FO|*`)."""

    exact: frozenset[str]
    segments: frozenset[str]

    @classmethod
    def parse(cls, claim: object) -> KeyScope:
        """The `keys` claim: a list of strings (or one comma-separated string)."""
        items: Iterable[object]
        if isinstance(claim, str):
            items = claim.split(",")
        elif isinstance(claim, list):
            items = claim
        else:
            raise TokenRefused("bad_claims")
        exact: set[str] = set()
        segments: set[str] = set()
        for item in items:
            if not isinstance(item, str):
                raise TokenRefused("bad_claims")
            item = item.strip()
            if item.endswith("|*"):
                segments.add(item[:-2])
            elif item:
                exact.add(item)
        return cls(frozenset(exact), frozenset(segments))

    def allows(self, key: str) -> bool:
        return key in self.exact or key.partition("|")[0] in self.segments

    def forbidden(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if not self.allows(key)]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a credential admits: `exp` (Unix seconds) None never expires, `keys` None allows
    every key."""

    sub: str
    exp: float | None = None
    keys: KeyScope | None = None

    def allows(self, key: str) -> bool:
        return self.keys is None or self.keys.allows(key)


def header_of(token: str) -> dict[str, Any]:
    """The token's (unverified) header, to choose the key; TokenRefused when it is no JWT."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenRefused("malformed")
    try:
        return jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRefused("malformed") from None


def verify_hmac(token: str, secret: str, audience: str | None) -> Viewer:
    """A token signed with the shared secret (HS256 only)."""
    return _decode(token, secret.encode(), HMAC_ALGORITHMS, audience)


def verify_with_jwk(token: str, key: jwt.PyJWK, audience: str | None) -> Viewer:
    """A token signed with an identity provider's key: only that key's own algorithm, and only
    when it is RS256 or ES256."""
    algorithm = key.algorithm_name
    if algorithm not in JWKS_ALGORITHMS:
        raise TokenRefused("unsupported_algorithm")
    return _decode(token, key.key, (algorithm,), audience)


def _decode(token: str, key: Any, algorithms: Sequence[str], audience: str | None) -> Viewer:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            options={"require": ["sub", "exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("bad_signature") from None
    except jwt.InvalidAudienceError:
        raise TokenRefused("wrong_audience") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRefused("unsupported_algorithm") from None
    except (jwt.MissingRequiredClaimError, InvalidSubjectError, jwt.ImmatureSignatureError):
        raise TokenRefused("bad_claims") from None
    except jwt.PyJWTError:
        raise TokenRefused("malformed") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise TokenRefused("bad_claims")
    keys = claims.get("keys")
    return Viewer(
        sub=subject,
        exp=float(claims["exp"]),
        keys=None if keys is None else KeyScope.parse(keys),
    )


def mint(
    secret: str,
    sub: str,
    ttl_seconds: int,
    *,
    keys: Sequence[str] | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 viewer token (what `tickstream token issue` prints)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_seconds}
    if keys:
        claims["keys"] = list(keys)
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret.encode(), algorithm="HS256")


_TTL: Final = re.compile(r"(\d+)([smhd]?)")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """`90`, `90s`, `15m`, `12h`, `30d` as seconds; ValueError otherwise."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h or 30d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
