"""What a start works out from the settings before anything runs: which model file, which
personas, where the database lives. `hearthbot run` uses it to start, `hearthbot check` to
say whether a start would work, so both always agree."""

from __future__ import annotations

from pathlib import Path

from bot.model.gguf import ModelFileError
from bot.personas import PersonaSet, load_personas
from bot.settings import ConfigError, Settings

DB_NAME = "hearthbot.db"


def database_path(settings: Settings) -> Path:
    return settings.bot.data_dir / DB_NAME


def models_dir(settings: Settings) -> Path:
    """Where `hearthbot model pull` downloads to and a start looks for a model."""
    return settings.bot.data_dir / "models"


def find_model(settings: Settings) -> Path | None:
    """The configured model, else the newest GGUF in data_dir/models/, else None."""
    if settings.model.path is not None:
        return settings.model.path.expanduser()
    from bot.model.pull import find_local_model  # huggingface_hub is slow to import

    return find_local_model(models_dir(settings))


def model_path(settings: Settings) -> Path:
    """find_model, or a ModelFileError that says how to get a model."""
    found = find_model(settings)
    if found is None:
        raise ModelFileError(
            f"no model: set [model] path (or HEARTHBOT_MODEL__PATH), or run `hearthbot model "
            f"pull` to download {settings.model.pull_repo}/{settings.model.pull_file} into "
            f"{models_dir(settings)}"
        )
    return found


def checked_personas(settings: Settings) -> PersonaSet:
    """The personas, with the configured default among them (a ConfigError if not)."""
    personas = load_personas(settings.bot.personas_dir)
    if personas.get(settings.bot.default_persona) is None:
        raise ConfigError(
            f"bot.default_persona: no persona named {settings.bot.default_persona!r} "
            f"(have: {', '.join(personas.names())})"
        )
    return personas
