"""The ingestor's settings: environment variable = field name in upper case (no prefix)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import orjson
from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.instruments import Mode, is_instrument_key
from shared.settings import CommonSettings, comma_list
from shared.upstox.backoff import Backoff

# Upstox's per-user key limits (api-facts section 4). full_d30 has no published combined figure;
# its single-mode limit (50) is already far below every combined one.
SINGLE_MODE_LIMITS: dict[Mode, int] = {
    Mode.LTPC: 5000,
    Mode.OPTION_GREEKS: 3000,
    Mode.FULL: 2000,
    Mode.FULL_D30: 50,
}
COMBINED_MODE_LIMITS: dict[Mode, int] = {
    Mode.LTPC: 2000,
    Mode.OPTION_GREEKS: 2000,
    Mode.FULL: 1500,
    Mode.FULL_D30: 50,
}


def parse_static_key(entry: str) -> tuple[str, Mode]:
    """`"NSE_INDEX|Nifty 50:full"` -> (key, mode); without `:mode` the mode is `ltpc`.

    Instrument keys never contain a colon, so the last colon separates the mode.
    """
    key, sep, mode_name = entry.strip().rpartition(":")
    if not sep:
        key, mode_name = mode_name, Mode.LTPC.value
    if not is_instrument_key(key):
        raise ValueError(f"{entry!r}: not an instrument key (SEGMENT|IDENTIFIER)")
    try:
        mode = Mode(mode_name)
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise ValueError(f"{entry!r}: unknown mode {mode_name!r} (one of {modes})") from None
    return key, mode


def _limits_from_env(value: Any, defaults: dict[Mode, int]) -> dict[Mode, int]:
    """A JSON object of mode -> limit, merged over `defaults` (so one mode can be overridden)."""
    if isinstance(value, str | bytes):
        value = orjson.loads(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object of mode -> key limit")
    merged = dict(defaults)
    for name, limit in value.items():
        try:
            mode = Mode(name)
        except ValueError:
            raise ValueError(f"unknown mode {name!r}") from None
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"limit for {name} must be a non-negative integer")
        merged[mode] = limit
    return merged


class IngestorSettings(CommonSettings):
    ingestor_instance_id: str = Field(
        default_factory=lambda: "ingestor-" + secrets.token_hex(4),
        min_length=1,
        max_length=100,
        description="Name of this instance in the lease and status (default: random).",
    )
    ingestor_static_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description='Always-on keys, "KEY:mode" (mode defaults to ltpc), comma-separated or JSON.',
    )
    ingestor_lease_ttl_ms: int = Field(
        default=1000,
        ge=300,
        le=600_000,
        description="Lease of the active instance (ms): a standby takes over within this of the "
        "active's death, and an active that cannot renew it for this long stops streaming.",
    )
    ingestor_lease_renew_ms: int = Field(
        default=200,
        ge=50,
        le=300_000,
        description="How often the active instance renews its lease (ms); at most half the TTL.",
    )
    ingestor_batch_size: int = Field(default=500, ge=1, le=5000)
    ingestor_mode_limits: Annotated[dict[Mode, int], NoDecode] = Field(
        default_factory=lambda: dict(SINGLE_MODE_LIMITS),
        description="Keys per mode when only that mode is subscribed (JSON, merged over defaults).",
    )
    ingestor_combined_mode_limits: Annotated[dict[Mode, int], NoDecode] = Field(
        default_factory=lambda: dict(COMBINED_MODE_LIMITS),
        description="Keys per mode when several modes are subscribed (JSON, merged).",
    )
    ingestor_ping_interval: float = Field(default=10.0, gt=0, le=300)
    ingestor_ping_timeout: float = Field(default=10.0, gt=0, le=300)
    ingestor_open_timeout: float = Field(default=10.0, gt=0, le=120)
    ingestor_max_frame_bytes: int = Field(default=16 << 20, ge=1 << 16)
    ingestor_backoff_initial: float = Field(default=0.5, gt=0, le=60)
    ingestor_backoff_max: float = Field(default=30.0, gt=0, le=600)
    ingestor_stable_after_seconds: float = Field(
        default=30.0, ge=0, description="A connection this old resets the upstream backoff."
    )
    ingestor_silence_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Stall watchdog: no data frame for this long while something is subscribed "
        "in an open segment is a stall (resubscribe, then reconnect).",
    )
    ingestor_demand_rescan_seconds: float = Field(default=2.0, gt=0, le=300)
    ingestor_demand_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="After Redis comes back, keep subscriptions this long while gateways "
        "rewrite their demand, instead of dropping everything at once.",
    )
    ingestor_token_recheck_seconds: float = Field(
        default=30.0, gt=0, description="Re-read the session now and then in case an event is lost."
    )
    ingestor_last_value_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=0, description="TTL of last values; 0 keeps them forever."
    )
    ingestor_max_pending_ticks: int = Field(
        default=200_000, ge=1000, description="Ticks buffered for Redis before old ones are shed."
    )
    ingestor_record: bool = Field(
        default=True, description="Append every frame received to the record stream (recorder)."
    )
    ingestor_record_stream_mb: float = Field(
        default=64.0, gt=0, description="The record stream's memory in Redis, about (MAXLEN ~)."
    )
    ingestor_record_buffer_mb: float = Field(
        default=64.0, gt=0, description="Frames kept for the stream while Redis is unreachable."
    )

    @field_validator("ingestor_static_keys", mode="before")
    @classmethod
    def _split_static_keys(cls, value: Any) -> Any:
        return comma_list(value)

    @field_validator("ingestor_static_keys")
    @classmethod
    def _check_static_keys(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_static_key(entry)
        return value

    @field_validator("ingestor_mode_limits", mode="before")
    @classmethod
    def _single_limits(cls, value: Any) -> dict[Mode, int]:
        return _limits_from_env(value, SINGLE_MODE_LIMITS)

    @field_validator("ingestor_combined_mode_limits", mode="before")
    @classmethod
    def _combined_limits(cls, value: Any) -> dict[Mode, int]:
        return _limits_from_env(value, COMBINED_MODE_LIMITS)

    @model_validator(mode="after")
    def _check_backoff(self) -> IngestorSettings:
        if self.ingestor_backoff_max < self.ingestor_backoff_initial:
            raise ValueError("INGESTOR_BACKOFF_MAX must be >= INGESTOR_BACKOFF_INITIAL")
        return self

    @model_validator(mode="after")
    def _check_lease(self) -> IngestorSettings:
        # Two tries per TTL at least: one slow renewal must not cost the lease.
        if self.ingestor_lease_renew_ms * 2 > self.ingestor_lease_ttl_ms:
            raise ValueError("INGESTOR_LEASE_RENEW_MS must be at most half INGESTOR_LEASE_TTL_MS")
        return self

    def backoff(self) -> Backoff:
        """A fresh backoff between the configured bounds (Redis probes, feed reconnects)."""
        return Backoff(self.ingestor_backoff_initial, self.ingestor_backoff_max)

    def static_demand(self) -> dict[str, set[Mode]]:
        demand: dict[str, set[Mode]] = {}
        for entry in self.ingestor_static_keys:
            key, mode = parse_static_key(entry)
            demand.setdefault(key, set()).add(mode)
        return demand
