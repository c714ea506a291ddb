"""Settings: a TOML file, overridden by HEARTHBOT_<SECTION>__<KEY> env vars and by a secrets
directory (systemd credentials). Unknown keys are errors, so a typo is never silently ignored."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "HEARTHBOT_"
ENV_DELIMITER = "__"
DEFAULT_CONFIG_NAME = "hearthbot.toml"


def default_data_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; otherwise follow XDG.
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "hearthbot"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSettings(Section):
    path: Path | None = Field(
        None, description="GGUF file. Empty: the newest .gguf in data_dir/models/."
    )
    n_ctx: int = Field(4096, ge=256, le=1_048_576, description="Context window in tokens.")
    n_threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for generation. Empty: all cores."
    )
    n_batch: int = Field(512, ge=8, le=65536, description="Prompt tokens evaluated per batch.")
    pull_repo: str = Field(
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF", description="Hugging Face repo for `model pull`."
    )
    pull_file: str = Field(
        "qwen2.5-1.5b-instruct-q4_k_m.gguf", description="File in pull_repo for `model pull`."
    )

    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


class BotSettings(Section):
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="History database and models. Default: $STATE_DIRECTORY or "
        "$XDG_DATA_HOME/hearthbot.",
    )
    personas_dir: Path | None = Field(
        None, description="Extra persona files; a name here overrides a bundled persona."
    )
    default_persona: str = Field("assistant", min_length=1, description="Persona of new channels.")
    admin_commands: list[str] = Field(
        default_factory=lambda: ["persona", "temperature", "seed"],
        description="Commands only admins may use (anyone may in a direct chat).",
    )
    admins: list[str] = Field(
        default_factory=list,
        description='Admins as "platform:user_id", e.g. "discord:1234". The console user is '
        "always an admin.",
    )
    catch_up_window_s: float = Field(
        600, ge=0, description="After a restart, pending messages younger than this are answered."
    )


class QueueSettings(Section):
    max_pending: int = Field(64, ge=1, le=100_000, description="Messages queued at most.")
    per_user_per_minute: int = Field(
        6, ge=1, le=10_000, description="Messages one user may queue per minute (admins exempt)."
    )


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        secrets_prefix="",
        secrets_dir_missing="ok",
        nested_model_default_partial_update=True,
    )

    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    bot: BotSettings = Field(default_factory=BotSettings)  # type: ignore[arg-type]
    queue: QueueSettings = Field(default_factory=QueueSettings)  # type: ignore[arg-type]
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]

    # Set on a per-load subclass: pydantic-settings takes the TOML path from the class.
    toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit values > env > secrets dir > TOML file > defaults.
        return (
            init_settings,
            env_settings,
            NestedSecretsSettingsSource(file_secret_settings),
            TomlConfigSettingsSource(
                settings_cls, toml_file=getattr(settings_cls, "toml_path", None)
            ),
        )


class ConfigError(Exception):
    """A configuration problem, already worded for the user (one readable block)."""


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """`--config`, else $HEARTHBOT_CONFIG, else ./hearthbot.toml if present. A file that was
    named but does not exist is an error."""
    named = explicit or os.environ.get("HEARTHBOT_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_settings(
    config_file: Path | None = None, secrets_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Load and validate. Raises ConfigError with every problem named by field."""
    if secrets_dir is None and (creds := os.environ.get("CREDENTIALS_DIRECTORY")):
        secrets_dir = Path(creds)  # systemd LoadCredential=
    if config_file is not None:
        _check_toml(config_file)
    configured = type("ConfiguredSettings", (Settings,), {"toml_path": config_file})
    try:
        return configured(_secrets_dir=secrets_dir, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config_file)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {_cause(exc)}") from None


def _check_toml(path: Path) -> None:
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _cause(exc: BaseException) -> str:
    text = str(exc)
    if exc.__cause__ is not None:
        text += f" ({exc.__cause__})"
    return text


def env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in loc)


def format_validation_error(exc: ValidationError, config_file: Path | None) -> str:
    where = f" in {config_file}" if config_file else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see docs/settings.md)"
        else:
            message = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                message += f" (got {_shown(loc, err['input'])})"
        lines.append(f"  {field}: {message}  [env {env_name(loc)}]")
    return "\n".join(lines)


_SECRET_WORDS = ("token", "password", "secret", "api_key", "access")


def _shown(loc: tuple[str | int, ...], value: object) -> str:
    if any(word in str(part).lower() for part in loc for word in _SECRET_WORDS):
        return "***"
    return repr(value)
