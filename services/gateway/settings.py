"""The gateway's settings: one class, environment variables named after the fields."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings, comma_list
from shared.viewer_tokens import MIN_SECRET_BYTES


class GatewaySettings(CommonSettings):
    """Limits, timings and access rules of one gateway replica."""

    gateway_replica_id: str = Field(
        default_factory=lambda: "gw-" + secrets.token_hex(4),
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="This replica's id in Redis (its demand hash); random by default.",
    )
    gateway_max_keys_per_client: int = Field(default=200, ge=1, le=10_000)
    gateway_max_demand_keys: int = Field(
        default=5000,
        ge=1,
        description=(
            "Distinct instrument keys this replica's demand may hold (Upstox streams at most "
            "5000 per connection); a subscribe past it gets `capacity` for the keys not taken."
        ),
    )
    gateway_max_ops_per_second: float = Field(
        default=20.0, gt=0, description="Client requests per second (token bucket, burst = rate)."
    )
    gateway_max_message_bytes: int = Field(
        default=64 * 1024, ge=256, le=16 << 20, description="Larger client frames: close 1009."
    )
    gateway_flush_interval_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="Coalescing window: live updates wait at most this long to share a frame.",
    )
    gateway_max_backlog_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Bytes queued for one client (its write buffer) above which it is behind.",
    )
    gateway_max_backlog_seconds: float = Field(
        default=5.0, gt=0, description="A client behind for longer is closed (4000)."
    )
    gateway_socket_send_buffer_bytes: int = Field(
        default=0,
        ge=0,
        description=(
            "SO_SNDBUF of client sockets; 0 keeps the kernel's auto-tuning. Smaller buffers "
            "notice a slow client sooner and cost less kernel memory per connection."
        ),
    )
    gateway_ping_interval_seconds: float = Field(default=20.0, gt=0)
    gateway_idle_timeout_seconds: float = Field(
        default=60.0, gt=0, description="No frame (not even a pong) for this long: close 4001."
    )
    gateway_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Browser origins allowed besides the gateway's own (Origin host = Host header); "
            "comma-separated, '*' allows any. Clients without an Origin header are allowed."
        ),
    )
    gateway_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated client API keys; empty: no client authentication.",
    )
    gateway_viewer_access: Literal["open", "token"] = Field(
        default="open",
        description=(
            "'open': anyone who reaches the gateway may watch (the demo); 'token': the "
            "dashboard, /ws and /api/* need a viewer token or an API key."
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
    gateway_max_connections: int = Field(
        default=20_000, ge=1, description="WebSocket connections one replica accepts (1013)."
    )
    gateway_max_connections_per_address: int = Field(
        default=200,
        ge=0,
        description="WebSocket connections per client address (forwarded-for believed only "
        "from TRUSTED_PROXIES); 0: no cap.",
    )
    gateway_demand_lease_seconds: float = Field(default=10.0, ge=1, le=600)
    gateway_instruments_source: str = Field(
        default="simulator",
        description=(
            "'simulator' (the simulator's universe) or the path or URL of Upstox's instrument "
            "master (JSON, optionally gzipped)."
        ),
    )
    gateway_close_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a closing connection may take to drain."
    )
    gateway_drain_seconds: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description=(
            "On SIGTERM: not ready at once, new WebSocket handshakes refused (503), and each "
            "client closed with 1012 at a jittered moment spread over this many seconds, so a "
            "rolling restart does not make every client reconnect at once; then the process "
            "exits (within this plus GATEWAY_CLOSE_TIMEOUT_SECONDS and a few seconds)."
        ),
    )
    gateway_pubsub_probe_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "Liveness probe of the Redis pub/sub connection: a PING this often, unanswered for "
            "as long again and the connection is rebuilt (a silent link is noticed within "
            "twice this)."
        ),
    )
    gateway_first_value_wait_ms: float = Field(
        default=2000.0,
        ge=0,
        le=60_000,
        description=(
            "A subscribed key with no value yet: its initial_feed waits this long for the "
            "first one (other keys are not held back); 0 sends the initial_feed without it."
        ),
    )
    gateway_history_per_minute: int = Field(
        default=60,
        ge=1,
        le=60_000,
        description="/api/history requests one viewer (its token's subject, else its address) "
        "may make per minute, cached answers included; beyond it: 429 with Retry-After.",
    )
    gateway_history_cache_seconds: float = Field(
        default=30.0,
        ge=1,
        le=600,
        description="How long today's candles stay in the cache the replicas share (past days "
        "stay an hour): within it, one Upstox call serves every viewer of a chart.",
    )

    _split_origins = field_validator("gateway_allowed_origins", mode="before")(comma_list)
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
    def _check_viewer_access(self) -> GatewaySettings:
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

    @model_validator(mode="after")
    def _check_timings(self) -> GatewaySettings:
        if self.gateway_idle_timeout_seconds <= self.gateway_ping_interval_seconds:
            raise ValueError(
                "GATEWAY_IDLE_TIMEOUT_SECONDS must exceed GATEWAY_PING_INTERVAL_SECONDS "
                "(a live client answers each ping)"
            )
        return self

    @property
    def flush_interval(self) -> float:
        return self.gateway_flush_interval_ms / 1000.0
