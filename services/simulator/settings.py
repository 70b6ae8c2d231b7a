"""Settings of the Upstox simulator (`tickstream simulator`).

Every field is read from the environment variable of the same name in upper case, e.g.
`SIMULATOR_CLIENT_ID`. Defaults describe the demo app and user that `docker compose up` uses.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.ist import IST
from shared.settings import CommonSettings, comma_list

DEFAULT_REDIRECT_URIS = [
    "http://localhost:8080/exchange-token",
    "http://127.0.0.1:8080/exchange-token",
    "http://localhost:8001/exchange-token",
    "http://127.0.0.1:8001/exchange-token",
]


class SimulatorSettings(CommonSettings):
    """The simulated Upstox app, its users, the market model and the feed's limits."""

    simulator_client_id: str = Field(
        default="tickstream-demo", min_length=1, description="API key of the simulated app."
    )
    simulator_client_secret: SecretStr = Field(
        default=SecretStr("tickstream-demo-secret"),
        description="API secret of the simulated app (checked at the token exchange).",
    )
    simulator_redirect_uris: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_REDIRECT_URIS),
        description="Redirect URIs registered for the app (exact match); comma-separated or JSON.",
    )
    simulator_demo_token: SecretStr | None = Field(
        default=None,
        description="A fixed access token accepted without login, for the first demo user.",
    )
    simulator_seed: int = Field(default=42, description="Seed of the market model.")
    simulator_tick_interval_ms: float = Field(
        default=500.0, gt=0, le=60_000, description="Per-instrument tick period of the live feed."
    )
    simulator_market_clock: Literal["open", "ist"] = Field(
        default="open",
        description="'open': the market never closes (demo); 'ist': NSE/MCX hours in IST.",
    )
    simulator_market_clock_start: dt.datetime | None = Field(
        default=None,
        description="The market's time at start (ISO 8601, e.g. 2026-01-04T12:00; no offset: "
        "IST), running on from there: feed frames, market status and candles follow it, tokens "
        "keep real time. For drills and tests at a chosen market phase. Default: real time.",
    )
    simulator_admin_key: SecretStr | None = Field(
        default=None, description="Enables the /admin API; requests carry it as X-Admin-Key."
    )
    simulator_public_url: str | None = Field(
        default=None,
        pattern=r"^(https?|wss?)://",
        description="Base URL of the feed URLs handed out; default: from the request's Host.",
    )
    simulator_rate_limit_per_second: int = Field(default=50, ge=1)
    simulator_rate_limit_per_minute: int = Field(default=500, ge=1)
    simulator_rate_limit_per_30_minutes: int = Field(default=2000, ge=1)
    simulator_max_connections_per_user: int = Field(default=2, ge=1)
    simulator_limit_ltpc: int = Field(default=5000, ge=0, description="ltpc keys, one mode used")
    simulator_limit_option_greeks: int = Field(default=3000, ge=0)
    simulator_limit_full: int = Field(default=2000, ge=0)
    simulator_limit_full_d30: int = Field(default=50, ge=0)
    simulator_combined_limit_ltpc: int = Field(
        default=2000, ge=0, description="ltpc keys when several modes are in use"
    )
    simulator_combined_limit_option_greeks: int = Field(default=2000, ge=0)
    simulator_combined_limit_full: int = Field(default=1500, ge=0)
    simulator_combined_limit_full_d30: int = Field(default=50, ge=0)
    simulator_send_queue_frames: int = Field(
        default=256,
        ge=1,
        description="Frames queued per feed connection; live frames past it are skipped.",
    )
    simulator_partial_ticks: bool = Field(
        default=True,
        description="Live ticks leave out the parts that did not change since the instrument's "
        "previous tick (depth, greeks, candles), as Upstox's do; false: every part, always.",
    )
    simulator_replay: Path | None = Field(
        default=None,
        description="Serve a recording instead of the market model: a recording's root "
        "(frames/day=*/...) or one frames .parquet file; login, REST and the feed stay the same.",
    )
    simulator_replay_speed: float = Field(
        default=1.0, gt=0, le=10_000, description="Replay this many times faster than recorded."
    )
    simulator_replay_from: str | None = Field(
        default=None,
        description="Skip the frames received before this time: ISO 8601 (no offset: IST) or "
        "HH:MM (IST, on the first recorded day).",
    )
    simulator_replay_loop: bool = Field(
        default=False, description="Start the replay over at its end (else the feed goes quiet)."
    )

    _split_uris = field_validator("simulator_redirect_uris", mode="before")(comma_list)

    @field_validator("simulator_market_clock_start")
    @classmethod
    def _in_ist(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=IST)
        return value
