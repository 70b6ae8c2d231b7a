"""Viewer tokens of the operator's own identity provider: a real JWKS served over HTTP on port 0,
keys generated here, the gateway's `ViewerAccess` fetching and caching the set."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.gateway.settings import GatewaySettings
from shared.viewer_access import ViewerAccess
from shared.viewer_tokens import TokenRefused
from tests.support.tokens import (
    IdentityProvider,
    claims,
    ec_key,
    hmac_signed,
    identity_provider,
    rsa_key,
    unsigned,
)

SECRET = "j" * 40


@contextlib.asynccontextmanager
async def access(provider: IdentityProvider, **overrides: Any) -> AsyncIterator[ViewerAccess]:
    options: dict[str, Any] = {
        "gateway_viewer_access": "token",
        "gateway_token_jwks_url": provider.url,
        "gateway_token_jwks_refresh_seconds": 3600,
        **overrides,
    }
    viewers = ViewerAccess(GatewaySettings(**options))
    try:
        yield viewers
    finally:
        await viewers.aclose()


def signed(private: Any, kid: str, algorithm: str = "RS256") -> str:
    return jwt.encode(claims(), private, algorithm=algorithm, headers={"kid": kid})


async def reason(viewers: ViewerAccess, token: str) -> str:
    with pytest.raises(TokenRefused) as refused:
        await viewers.verify(token)
    return refused.value.reason


async def test_rs256_and_es256_tokens_from_the_provider_are_admitted() -> None:
    async with identity_provider() as provider:
        rsa_private, rsa_public = rsa_key("r1")
        ec_private, ec_public = ec_key("e1")
        provider.keys = [rsa_public, ec_public]
        async with access(provider) as viewers:
            assert (await viewers.verify(signed(rsa_private, "r1"))).sub == "viewer-1"
            assert (await viewers.verify(signed(ec_private, "e1", "ES256"))).sub == "viewer-1"
            assert provider.fetches == 1  # the set is cached
            wrong = signed(ec_key("e1")[0], "e1", "ES256")
            assert await reason(viewers, wrong) == "bad_signature"


async def test_the_providers_public_key_is_no_hmac_secret() -> None:
    """HS256 signed with the RSA public key: refused with the JWKS alone, and when a secret is
    configured too (then it is checked against the secret, and fails)."""
    async with identity_provider() as provider:
        private, public = rsa_key("r1")
        provider.keys = [public]
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        forged = hmac_signed(claims(), pem, kid="r1")
        async with access(provider) as jwks_only:
            assert await reason(jwks_only, forged) == "unsupported_algorithm"
        async with access(provider, gateway_token_secret=SECRET) as both:
            assert await reason(both, forged) == "bad_signature"
            assert await reason(both, unsigned(claims())) == "unsupported_algorithm"
            hs = jwt.encode(claims(), SECRET.encode(), algorithm="HS256")
            assert (await both.verify(hs)).sub == "viewer-1"


async def test_an_unknown_kid_refetches_at_most_once_per_interval() -> None:
    async with identity_provider() as provider:
        old_private, old_public = rsa_key("old")
        provider.keys = [old_public]
        async with access(provider) as viewers:
            await viewers.verify(signed(old_private, "old"))
            assert provider.fetches == 1
            new_private, new_public = rsa_key("new")
            provider.keys = [old_public, new_public]
            for n in range(20):  # invented kids: no fetch within the refresh interval
                assert await reason(viewers, signed(new_private, f"made-up-{n}")) == (
                    "unknown_key_id"
                )
            assert provider.fetches == 1


async def test_a_rotated_key_is_fetched_once_the_interval_has_passed() -> None:
    async with identity_provider() as provider:
        old_private, old_public = rsa_key("old")
        provider.keys = [old_public]
        async with access(provider, gateway_token_jwks_refresh_seconds=1) as viewers:
            await viewers.verify(signed(old_private, "old"))
            new_private, new_public = rsa_key("new")
            provider.keys = [new_public]
            await asyncio.sleep(1.2)  # past the refresh interval (a bound, not a measurement)
            assert (await viewers.verify(signed(new_private, "new"))).sub == "viewer-1"
            assert provider.fetches == 2


async def test_a_provider_that_fails_refuses_clearly() -> None:
    private, public = rsa_key("r1")
    async with identity_provider() as provider:
        provider.keys = [public]
        provider.failing = True
        async with access(provider) as viewers:
            assert await reason(viewers, signed(private, "r1")) == "jwks_unavailable"
            assert provider.fetches == 1
    unreachable = IdentityProvider(url=provider.url)  # its server is gone now
    async with access(unreachable) as viewers:
        assert await reason(viewers, signed(private, "r1")) == "jwks_unavailable"
