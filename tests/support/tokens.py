"""Viewer tokens for tests: keys generated on the spot, and the forgeries an attacker would
try (which PyJWT itself refuses to produce)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import running_server


def claims(sub: str = "viewer-1", ttl: int = 600, **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time()) + ttl, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any]) -> str:
    """`alg: none`: a token with no signature at all."""
    return _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode()) + "."


def hmac_signed(payload: dict[str, Any], secret: bytes, kid: str | None = None) -> str:
    """HS256 by hand with any bytes as the secret (PyJWT refuses a PEM public key there: the
    RS256-to-HS256 confusion an attacker tries)."""

    header: dict[str, str] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def rsa_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    """A private key and its public JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def ec_key(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public, "kid": kid, "use": "sig"}


@dataclass
class IdentityProvider:
    """A JWKS endpoint whose keys a test can change, counting the fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    failing: bool = False
    url: str = ""

    async def jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.failing:
            return Response("down", status_code=503)
        return JSONResponse({"keys": self.keys})


@contextlib.asynccontextmanager
async def identity_provider() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    app = Starlette(routes=[Route("/.well-known/jwks.json", provider.jwks)])
    async with running_server(app) as server:
        provider.url = server.http_url + "/.well-known/jwks.json"
        yield provider
