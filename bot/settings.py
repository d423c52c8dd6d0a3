"""Configuration from the environment (and a `.env` file), validated once at start-up."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")


class Settings(BaseSettings):
    """Every setting a running bot reads; names match the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: SecretStr | None = None
    database_url: str = "sqlite+aiosqlite:///community.db"
    telegram_api_base_url: str | None = None
    bot_timezone: str = "UTC"
    bot_language: Language | None = None
    bot_owners: Annotated[frozenset[int], NoDecode] = Field(default_factory=frozenset)
    content_dir: str = "content"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    port: int = 8080
    health_port: int | None = None  # /healthz; in webhook mode it defaults to PORT + 1
    claim_lease_seconds: float = Field(default=60.0, ge=1.0)  # a silent process is dead after
    sweep_seconds: float = Field(default=60.0, ge=1.0)  # how often jobs are re-derived

    @field_validator("bot_owners", mode="before")
    @classmethod
    def _parse_owners(cls, value: object) -> object:
        """Accept the documented comma-separated form (`123,456`)."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            try:
                return frozenset(int(part) for part in parts)
            except ValueError as exc:
                raise ValueError("BOT_OWNERS must be comma-separated numeric user ids") from exc
        return value

    @field_validator("bot_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Asia/Shanghai"
            ) from exc
        return value

    @field_validator("bot_language", mode="before")
    @classmethod
    def _empty_language_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def token(self) -> str | None:
        return self.bot_token.get_secret_value() if self.bot_token else None
