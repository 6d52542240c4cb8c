"""Settings read from the environment (prefix ``WB_``), shared by every command."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Defaults for every wearbus process; command-line options win over them.

    Attributes:
        broker: the broker URL (``WB_BROKER``).
        log_level: debug, info, warning or error (``WB_LOG_LEVEL``).
        log_json: force JSON logs on or off (``WB_LOG_JSON``); by default JSON when not on a terminal.
    """

    model_config = SettingsConfigDict(env_prefix="WB_", extra="ignore")

    broker: str = "mqtt://127.0.0.1:1883"
    log_level: str = "info"
    log_json: bool | None = None
