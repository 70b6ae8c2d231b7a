"""Viewer access, shared by every service that serves market data to viewers (the gateway, the
recorder's query API): the settings that choose who may watch, where a client puts its
credential, and which credential admits whom (API keys, HS256 tokens, tokens of the operator's
identity provider), with the identity provider's key set fetched off the event loop's critical
path and cached.

One set of settings for all of them, so a deployment that closes the gateway to anonymous
viewers closes the recording with it; the variables keep the gateway's names
(GATEWAY_VIEWER_ACCESS, ...) because deployments set them already.

`ViewerAccess.check` answers at once when it can (open mode, an API key, HS256, a cached JWKS
key); only a token whose key is not cached needs `verify`, which fetches the key set first, at
most once every GATEWAY_TOKEN_JWKS_REFRESH_SECONDS, so made-up `kid`s cannot make a service
hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Final, Literal, Self
from urllib.parse import parse_qs

import httpx
import jwt
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import comma_list
from shared.viewer_tokens import (
    HMAC_ALGORITHMS,
    JWKS_ALGORITHMS,
    MIN_SECRET_BYTES,
    TokenRefused,
    Viewer,
    header_of,
    verify_hmac,
    verify_with_jwk,
)

logger = logging.getLogger(__name__)

VIEWER_COOKIE: Final = "tickstream_viewer"
ANONYMOUS: Final = Viewer(sub="anonymous")
JWKS_MAX_AGE_SECONDS: Final = 600.0  # a key the provider withdrew stops working within this
JWKS_FETCH_TIMEOUT_SECONDS: Final = 5.0
MAX_JWKS_BYTES: Final = 256 * 1024


class ViewerSettings(BaseModel):
    """Who may watch: a mixin of the settings of every service that serves viewers (the
    gateway's `GatewaySettings`, the recorder's `RecorderSettings`), put before
    `CommonSettings` among the bases.

    The recorder reads the SAME variables as the gateway (GATEWAY_VIEWER_ACCESS,
    GATEWAY_API_KEYS, GATEWAY_TOKEN_SECRET, GATEWAY_TOKEN_JWKS_URL, GATEWAY_TOKEN_AUDIENCE,
    GATEWAY_TOKEN_JWKS_REFRESH_SECONDS): give it the gateway's values, or the recording stays
    open to viewers the gateway refuses.
    """

    gateway_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated client API keys; empty: no client authentication.",
    )
    gateway_viewer_access: Literal["open", "token"] = Field(
        default="open",
        description=(
            "'open': anyone who reaches the service may watch (the demo); 'token': the "
            "dashboard, /ws and /api/* (the gateway's and the recorder's) need a viewer token "
            "or an API key."
        ),
    )
    gateway_token_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret (at least 32 bytes) verifying HS256 viewer tokens, and "
        "signing them with `tickstream token issue`.",
    )
    gateway_token_jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="JWKS URL of your identity provider: RS256/ES256 viewer tokens are checked "
        "against its keys.",
    )
    gateway_token_audience: str | None = Field(
        default=None, description="When set, a viewer token's `aud` must name it."
    )
    gateway_token_jwks_refresh_seconds: float = Field(
        default=60.0,
        ge=1,
        le=86_400,
        description="Fetch the JWKS at most this often (a token with an unknown `kid` waits for "
        "the next allowed fetch rather than hammering the identity provider).",
    )

    _split_keys = field_validator("gateway_api_keys", mode="before")(comma_list)

    @field_validator(
        "gateway_token_secret", "gateway_token_jwks_url", "gateway_token_audience", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("gateway_token_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (HS256's strength)")
        return value

    @model_validator(mode="after")
    def _check_viewer_access(self) -> Self:
        verifiable = self.gateway_token_secret or self.gateway_token_jwks_url
        if self.gateway_viewer_access == "token" and not (verifiable or self.gateway_api_keys):
            raise ValueError(
                "GATEWAY_VIEWER_ACCESS=token needs GATEWAY_TOKEN_SECRET, "
                "GATEWAY_TOKEN_JWKS_URL or GATEWAY_API_KEYS"
            )
        return self

    @property
    def viewers_need_credentials(self) -> bool:
        """Token mode, or API keys listed (which have always required a key)."""
        return self.gateway_viewer_access == "token" or bool(self.gateway_api_keys)


def presented_key(
    query_string: str, authorization: str | None, cookie: str | None = None
) -> str | None:
    """The credential (API key or viewer token) a client presents, in this order:
    `Authorization: Bearer`, `?token=`, `?api_key=`, the sign-in cookie."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    query = parse_qs(query_string)
    for name in ("token", "api_key"):
        if query.get(name):
            return query[name][0]
    return cookie_value(cookie, VIEWER_COOKIE)


def cookie_value(header: str | None, name: str) -> str | None:
    """One cookie's value from a `Cookie` header."""
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            return value.strip('"')
    return None


def key_accepted(presented: str | None, keys: Sequence[SecretStr]) -> bool:
    """Whether `presented` is one of `keys` (constant-time); no keys configured: auth is off."""
    if not keys:
        return True
    if not presented:
        return False
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    return matched


class JwksKeys:
    """The identity provider's public keys by `kid`, fetched at most every `min_interval`."""

    def __init__(
        self,
        url: str,
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._min_interval = min_interval
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last attempt, successful or not
        self._loaded_at: float | None = None  # last successful fetch
        self._fetch: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT_SECONDS, trust_env=False)

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The cached key; a token without `kid` may use the only key of a one-key set."""
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    @property
    def stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at > JWKS_MAX_AGE_SECONDS

    def may_fetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._min_interval

    async def refresh(self) -> None:
        """Fetch the set unless fetched within `min_interval`; concurrent callers share one
        fetch. A failure keeps the keys already known and raises TokenRefused."""
        if self._fetch is None:
            if not self.may_fetch():
                return
            self._fetched_at = self._clock()
            self._fetch = asyncio.create_task(self._load())
        fetch = self._fetch
        try:
            await asyncio.shield(fetch)
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as error:
            raise TokenRefused("jwks_unavailable") from error
        finally:
            if fetch.done() and self._fetch is fetch:
                self._fetch = None

    async def _load(self) -> None:
        try:
            response = await self._http.get(self._url)
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("the key set is larger than a key set should be")
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as error:
            logger.warning("could not fetch the JWKS at %s: %s", self._url, error)
            raise
        self._keys = {key.key_id: key for key in keys if key.algorithm_name in JWKS_ALGORITHMS}
        self._loaded_at = self._clock()
        logger.info("JWKS loaded from %s: %d usable keys", self._url, len(self._keys))

    async def aclose(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
        await self._http.aclose()


class ViewerAccess:
    """Turns a presented credential into a `Viewer`, or refuses it with a reason."""

    def __init__(self, settings: ViewerSettings) -> None:
        self.required = settings.viewers_need_credentials
        self._api_keys = settings.gateway_api_keys
        secret = settings.gateway_token_secret
        self._secret = None if secret is None else secret.get_secret_value()
        self._audience = settings.gateway_token_audience
        self.jwks: JwksKeys | None = None
        if settings.gateway_token_jwks_url:
            self.jwks = JwksKeys(
                settings.gateway_token_jwks_url, settings.gateway_token_jwks_refresh_seconds
            )

    def check(self, credential: str | None) -> Viewer | None:
        """The viewer at once, TokenRefused, or None: the identity provider's keys must be
        fetched first (await `verify`)."""
        if not self.required:
            return ANONYMOUS
        if not credential:
            raise TokenRefused("missing")
        if self._api_keys and key_accepted(credential, self._api_keys):
            # Each key its own viewer (per-viewer limits), named by a digest, never the key.
            digest = hashlib.sha256(credential.encode()).hexdigest()[:12]
            return Viewer(sub=f"api-key:{digest}")
        header = header_of(credential)
        algorithm = header.get("alg")
        if algorithm in HMAC_ALGORITHMS and self._secret is not None:
            return verify_hmac(credential, self._secret, self._audience)
        if algorithm in JWKS_ALGORITHMS and self.jwks is not None:
            kid = header.get("kid")
            key = self.jwks.key(kid if isinstance(kid, str) else None)
            if key is None or self.jwks.stale:
                if self.jwks.may_fetch():
                    return None
                if key is None:
                    raise TokenRefused("unknown_key_id")
            return verify_with_jwk(credential, key, self._audience)
        raise TokenRefused("unsupported_algorithm")

    async def verify(self, credential: str | None) -> Viewer:
        viewer = self.check(credential)
        if viewer is not None:
            return viewer
        assert self.jwks is not None
        failure: TokenRefused | None = None
        try:
            await self.jwks.refresh()
        except TokenRefused as refused:
            failure = refused  # a key still cached serves until the provider answers again
        try:
            viewer = self.check(credential)
        except TokenRefused as refused:
            if failure is not None and refused.reason == "unknown_key_id":
                raise failure from None
            raise
        if viewer is None:  # fetched just now, so the kid is really unknown
            raise failure or TokenRefused("unknown_key_id")
        return viewer

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()
