"""Checks of the configuration: the config file's permissions, and the personas."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, SecretStr

from bot.app.bootstrap import checked_personas
from bot.app.check.report import Check
from bot.personas import PersonaError
from bot.settings import BotSettings, ConfigError, Settings


def secrets_in_file(path: Path) -> list[str]:
    """Which secret settings (by "section.key") a TOML file sets."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    found = []
    for section, table in data.items():
        model = _section_model(section)
        if model is None or not isinstance(table, dict):
            continue
        for key, value in table.items():
            info = model.model_fields.get(key)
            if info is not None and value and SecretStr in (get_args(info.annotation) or ()):
                found.append(f"{section}.{key}")
    return found


def _section_model(section: str) -> type[BaseModel] | None:
    info = Settings.model_fields.get(section)
    model = info.annotation if info is not None else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def config_file_warnings(config_file: Path | None) -> list[str]:
    if config_file is None:
        return []
    try:
        mode = stat.S_IMODE(config_file.stat().st_mode)
    except OSError:
        return []
    held = secrets_in_file(config_file)
    if not (mode & 0o077 and held):
        return []
    return [
        f"{config_file} holds {', '.join(held)} and other users may read it (mode "
        f"{mode:04o}): chmod 600 it, or move the secret to the environment or a credentials file"
    ]


def admin_command_warnings(admin_commands: list[str]) -> list[str]:
    """Commands kept for admins by default that `[bot] admin_commands` opens to everyone: a
    list written before a command existed leaves the new command open."""
    factory = BotSettings.model_fields["admin_commands"].default_factory
    default: list[str] = factory() if factory is not None else []  # type: ignore[call-arg]
    opened = [name for name in default if name not in admin_commands]
    if not opened:
        return []
    names = ", ".join(f"!{name}" for name in opened)
    return [
        f"[bot] admin_commands leaves {names} open to everyone in servers and rooms (they "
        "change a setting for the whole channel): add them to keep them for admins"
    ]


def personas_check(settings: Settings) -> Check:
    try:
        personas = checked_personas(settings)
    except (ConfigError, PersonaError) as exc:
        return Check("personas", False, str(exc))
    names = ", ".join(personas.names())
    return Check("personas", True, f"{names} (default {settings.bot.default_persona})")
