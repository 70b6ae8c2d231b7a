"""Settings of the command-line tools."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from shared.settings import CommonSettings


class ToolSettings(CommonSettings):
    upstox_access_token: SecretStr | None = Field(
        default=None,
        description="Used when no valid session is stored in Redis (e.g. a console token).",
    )

    @field_validator("upstox_access_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
