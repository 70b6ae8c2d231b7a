"""Typed settings, read from the environment (and `.env`), shared by every service.

Each service has one settings class deriving from `CommonSettings`; variable names are the field
names in upper case (no prefix), so one name means one thing across the whole system. Bad values
fail at start with a message naming the variable (`load_settings`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from shared.hosts import LOOPBACK_HOSTS, normalise_entry

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8765"

# A directory of one file per setting (file name: the variable's name, content: its value), read
# after the environment and `.env`: compose hands each service its secrets this way, so they
# are in no container's environment (`docker inspect`) and only in the services that need them.
SECRETS_DIR_VARIABLE = "TICKSTREAM_SECRETS_DIR"


def comma_list(value: Any) -> Any:
    """`mode="before"` validator for list settings: a JSON list, or a comma-separated string, as
    a list of non-empty, stripped items (how a list is written in an environment variable)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return value


class CommonSettings(BaseSettings):
    """What every service reads: the bus, logging, and where Upstox (or the simulator) is."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # compose passes a variable left empty in .env as "": empty means the default, for
        # every setting alike (not a start-up error for some and an empty list for others).
        env_ignore_empty=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        directory = os.environ.get(SECRETS_DIR_VARIABLE)
        if directory:
            file_secret_settings = SecretsSettingsSource(settings_cls, secrets_dir=directory)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        pattern=r"^(redis|rediss|unix)://",
        description="Redis URL; rediss:// for TLS, redis://:PASSWORD@host:port/db for a password.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster: the services use a cluster "
        "client and ticks go out on sharded channels (SPUBLISH/SSUBSCRIBE). Every service "
        "must agree.",
    )
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] = "text"
    upstox_base_url: str = Field(
        default=DEFAULT_SIMULATOR_URL,
        pattern=r"^https?://",
        description="Upstox REST base: the simulator by default, https://api.upstox.com for real",
    )
    upstox_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    internal_service_key: SecretStr | None = Field(
        default=None,
        description="Shared secret that lets one service read the stored token from auth.",
    )
    token_encryption_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key (urlsafe base64 of 32 bytes) encrypting the access token at rest in "
            "Redis; every service that reads the token needs the same key. Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())'`."
        ),
    )

    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1", "::1"],
        description="Addresses or networks (CIDR) of the proxies in front of this service "
        "(tickstream front, nginx), comma separated: only their X-Forwarded-For and "
        "X-Forwarded-Proto are believed, so no other client can choose the address it is "
        "counted and rate-limited under. `*` believes anyone.",
    )

    _split_proxies = field_validator("trusted_proxies", mode="before")(comma_list)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies

    tickstream_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default=list(LOOPBACK_HOSTS),
        description="Host names this service answers to (any port), comma separated; "
        "`*.example.com` allows its subdomains. A request or WebSocket handshake for any other "
        "Host (or X-Forwarded-Host from a trusted proxy) is refused with 421 before routing, "
        "which defeats DNS rebinding. The host of the service's public URL (auth: "
        "UPSTOX_REDIRECT_URI's) is always added. `*` turns the check off: unsafe.",
    )

    _split_hosts = field_validator("tickstream_allowed_hosts", mode="before")(comma_list)

    @field_validator("tickstream_allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        return [normalise_entry(host) for host in hosts]

    def public_hosts(self) -> list[str]:
        """Hosts a service with a public URL of its own must answer to (none here)."""
        return []

    def allowed_hosts(self) -> list[str]:
        return [*self.tickstream_allowed_hosts, *self.public_hosts()]

    @field_validator("token_encryption_key")
    @classmethod
    def _check_fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from cryptography.fernet import Fernet  # only services that encrypt pay for the import

        try:
            Fernet(value.get_secret_value())
        except (ValueError, TypeError):
            raise ValueError("not a Fernet key (urlsafe base64 encoding of 32 bytes)") from None
        return value


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class SettingsError(Exception):
    """A setting has a bad value; the message names the environment variable."""


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        variable = "_".join(str(part) for part in problem["loc"]).upper() or "(settings)"
        lines.append(f"{variable}: {problem['msg']}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build `cls` from the environment, raising `SettingsError` that names each bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None


def load_settings_or_exit(cls: type[SettingsT]) -> SettingsT:
    """For entry points: a bad variable prints one clear line and exits with status 2."""
    try:
        return load_settings(cls)
    except SettingsError as error:
        sys.stderr.write(f"tickstream: {error}\n")
        raise SystemExit(2) from None
