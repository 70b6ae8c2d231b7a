"""Viewer access on one replica: which credential admits whom (API keys, HS256 tokens, tokens
of the operator's identity provider) and the identity provider's key set, fetched off the event
loop's critical path and cached.

`ViewerAccess.check` answers at once when it can (open mode, an API key, HS256, a cached JWKS
key); only a token whose key is not cached needs `verify`, which fetches the key set first, at
most once every GATEWAY_TOKEN_JWKS_REFRESH_SECONDS, so made-up `kid`s cannot make the gateway
hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx
import jwt

from services.gateway.security import ConnectionCaps, key_accepted
from services.gateway.settings import GatewaySettings
from shared.viewer_tokens import (
    HMAC_ALGORITHMS,
    JWKS_ALGORITHMS,
    TokenRefused,
    Viewer,
    header_of,
    verify_hmac,
    verify_with_jwk,
)

logger = logging.getLogger(__name__)

ANONYMOUS: Final = Viewer(sub="anonymous")
JWKS_MAX_AGE_SECONDS: Final = 600.0  # a key the provider withdrew stops working within this
JWKS_FETCH_TIMEOUT_SECONDS: Final = 5.0
MAX_JWKS_BYTES: Final = 256 * 1024


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

    def __init__(self, settings: GatewaySettings) -> None:
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


@dataclass(frozen=True)
class Admission:
    """What a WebSocket handshake is checked against, besides the origin."""

    viewers: ViewerAccess
    caps: ConnectionCaps

    @classmethod
    def of(cls, settings: GatewaySettings) -> Admission:
        caps = ConnectionCaps(
            settings.gateway_max_connections, settings.gateway_max_connections_per_address
        )
        return cls(ViewerAccess(settings), caps)
