"""Configuration from the environment (and a `.env` file), validated once at start-up."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
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
    # The operators' dashboard (bot/web): served by the bot process when a port is set.
    dashboard_port: int | None = None
    dashboard_url: str | None = None  # public address used in buttons, e.g. https://x/dash
    dashboard_listen: str = "127.0.0.1"  # behind the reverse proxy by default
    # Key of the hashed opt-outs (/forgetme); unset: derived from the bot token (see
    # docs/privacy.md: set it before rotating the token, or opt-outs are forgotten).
    privacy_salt: SecretStr | None = None
    health_port: int | None = None  # /healthz; in webhook mode it defaults to PORT + 1
    claim_lease_seconds: float = Field(default=60.0, ge=1.0)  # a silent process is dead after
    sweep_seconds: float = Field(default=60.0, ge=1.0)  # how often jobs are re-derived
    # Keep each received update in the database until it is handled (bot/inbox.py): a killed
    # process then loses none. Off saves its cost (~20 µs an update polling, ~90–160 webhook).
    keep_updates: bool = True

    def sweep_every(self, longest: timedelta) -> timedelta:
        """How often a schedule re-reads the database: its own interval, or SWEEP_SECONDS
        when that is shorter (several processes pick up each other's work sooner)."""
        return min(longest, timedelta(seconds=self.sweep_seconds))

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

    @field_validator("dashboard_port", "dashboard_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("dashboard_url")
    @classmethod
    def _check_dashboard_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError(
                "DASHBOARD_URL must be an http(s) URL, e.g. https://bot.example.com/dash"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _dashboard_port_is_its_own(self) -> Settings:
        if (
            self.dashboard_port is not None
            and self.webhook_url
            and self.dashboard_port == self.port
        ):
            raise ValueError("DASHBOARD_PORT must differ from PORT (the webhook's port)")
        return self

    @property
    def token(self) -> str | None:
        return self.bot_token.get_secret_value() if self.bot_token else None
