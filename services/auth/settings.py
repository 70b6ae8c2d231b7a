"""auth's settings: the Upstox app's credentials (API_KEY, API_SECRET), an optional
UPSTOX_ACCESS_TOKEN, where the login returns, which browser origins may call auth, where the
login's durable copy lives, and the operator's credential and session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings, comma_list

# The simulator's registered demo app, so `tickstream auth` logs in out of the box.
DEMO_CLIENT_ID: Final = "tickstream-demo"
DEMO_CLIENT_SECRET: Final = "tickstream-demo-secret"


class AuthSettings(CommonSettings):
    api_key: str = Field(
        default=DEMO_CLIENT_ID, min_length=1, description="Upstox API key (the OAuth client id)."
    )
    api_secret: SecretStr = Field(
        default=SecretStr(DEMO_CLIENT_SECRET), description="Upstox API secret; server side only."
    )
    upstox_redirect_uri: str = Field(
        default="http://localhost:8080/exchange-token",
        pattern=r"^https?://",
        description="OAuth redirect URI, exactly as registered with Upstox; it must reach "
        "this service's /exchange-token.",
    )
    upstox_dialog_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Base URL of the login dialog as the browser reaches it; defaults to "
        "UPSTOX_BASE_URL (in docker compose the browser sees the simulator at another address).",
    )
    upstox_access_token: SecretStr | None = Field(
        default=None,
        description="A token from Upstox's console: validated and stored at start, so the "
        "browser login can be skipped.",
    )
    auth_cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Origins allowed to call auth from a browser (comma separated or a JSON "
        "list); '*' is refused because responses are sent with credentials.",
    )
    auth_dashboard_url: str = Field(
        default="/", min_length=1, description="Where the browser goes after a login."
    )
    auth_state_ttl_seconds: int = Field(
        default=600, ge=30, le=3600, description="How long a login link (OAuth state) lives."
    )
    auth_state_dir: Path | None = Field(
        default=None,
        description="Directory of auth's durable copy of the login (the session, and logouts "
        "Redis has not seen), so a Redis crash never loses a login; unset: the login lives in "
        "Redis only. Compose mounts a volume here; `tickstream dev` uses its working directory.",
    )
    auth_authorize_per_minute: int = Field(
        default=30,
        ge=1,
        le=6000,
        description="Logins one client address may start (GET /authorize) per minute, in a "
        "burst or spread out; beyond it auth answers 429 with Retry-After (each start stores "
        "an OAuth state in Redis).",
    )
    auth_operator_password: SecretStr | None = Field(
        default=None,
        description="The operator's password (an .env secret): signs in on auth's page "
        "(/auth/). Unset: auth prints a one-time sign-in link in its log at start, and "
        "`tickstream operator-link` mints another.",
    )
    auth_operator_session_hours: float = Field(
        default=12,
        gt=0,
        le=720,
        description="How long an operator stays signed in (the cookie's Max-Age and the "
        "session's TTL in Redis).",
    )
    auth_operator_link_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="How long a one-time operator sign-in link stays redeemable.",
    )
    auth_operator_logins_per_minute: int = Field(
        default=5,
        ge=1,
        le=600,
        description="Operator sign-in attempts (password or link) one client address may make "
        "per minute; beyond it auth answers 429 with Retry-After.",
    )
    auth_restore_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How often auth compares Redis with its durable copy: a lost login is "
        "put back, a logout made while Redis was down is applied.",
    )

    @property
    def dialog_base_url(self) -> str:
        return self.upstox_dialog_base_url or self.upstox_base_url

    def public_hosts(self) -> list[str]:
        """The browser comes back to auth at the redirect URI: its host must be served."""
        return [host for host in (urlsplit(self.upstox_redirect_uri).hostname,) if host]

    @field_validator("api_key", "api_secret", mode="before")
    @classmethod
    def _blank_is_demo(cls, value: object, info: ValidationInfo) -> object:
        # compose passes unset variables through as empty strings: empty means the default.
        if isinstance(value, str) and not value.strip():
            return DEMO_CLIENT_ID if info.field_name == "api_key" else DEMO_CLIENT_SECRET
        return value

    @field_validator(
        "upstox_access_token", "auth_state_dir", "auth_operator_password", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_operator_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Guessing is rate-limited per address, not per account: a short password is guessable.
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("at least 12 characters (or leave it unset to sign in by link)")
        return value

    @field_validator("upstox_dialog_base_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    _split_origins = field_validator("auth_cors_origins", mode="before")(comma_list)

    @field_validator("auth_cors_origins")
    @classmethod
    def _no_wildcard(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(
                    f"{origin!r} is not an origin like https://host:port ('*' is not allowed)"
                )
        return [origin.rstrip("/") for origin in origins]
