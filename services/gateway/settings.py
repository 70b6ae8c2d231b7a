"""The gateway's settings: one class, environment variables named after the fields."""

from __future__ import annotations

import secrets
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings, comma_list
from shared.viewer_access import ViewerSettings


class GatewaySettings(ViewerSettings, CommonSettings):
    """Limits, timings and access rules of one gateway replica (who may watch:
    `ViewerSettings`, shared with the recorder)."""

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
        description=(
            "Coalescing bound: an idle gateway sends an update once it has read what came with "
            "it; from 20% of a core busy, updates wait longer to share frames, up to this long "
            "at 40%."
        ),
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
