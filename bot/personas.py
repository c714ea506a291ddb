"""Personas: a system prompt and sampling settings, one TOML file each.

The bundled ones ship inside the package (bot.bundled_personas, from personas/ in the source
tree); a user's personas_dir adds to them or overrides one by name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Sampling(BaseModel):
    """How the next token is drawn. The ranges are llama.cpp's sensible ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=1000)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    max_tokens: int = Field(512, ge=1, le=32768)


class Persona(Sampling):
    """A named character: its system prompt, a description for !persona, its sampling."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    description: str = Field("", max_length=200)
    system_prompt: str = Field(min_length=1, max_length=20_000)
    # False: this persona sees no notes (`!remember`) and keeps no summaries.
    memory: bool = True

    @field_validator("system_prompt", "description", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    def sampling(self) -> Sampling:
        return Sampling(**self.model_dump(include=set(Sampling.model_fields)))


class PersonaError(Exception):
    """A persona file is broken; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class PersonaSet:
    """The personas available by name: the bundled ones and the user's."""

    personas: dict[str, Persona]

    def get(self, name: str) -> Persona | None:
        return self.personas.get(name)

    def names(self) -> list[str]:
        return sorted(self.personas)


def parse_persona(text: str, origin: str, default_name: str) -> Persona:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaError(f"{origin}: not valid TOML: {exc}") from None
    data.setdefault("name", default_name)
    try:
        return Persona.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: "
            + ("unknown field" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors(include_url=False)
        )
        raise PersonaError(f"{origin}: {problems}") from None


def _read_dir(folder: Traversable, label: str) -> dict[str, Persona]:
    found: dict[str, Persona] = {}
    entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
    for entry in entries:
        if not entry.name.endswith(".toml") or not entry.is_file():
            continue
        origin = f"{label}/{entry.name}"
        try:
            text = entry.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PersonaError(f"{origin}: cannot read: {exc}") from None
        persona = parse_persona(text, origin, default_name=entry.name.removesuffix(".toml"))
        found[persona.name] = persona
    return found


def bundled_dir() -> Traversable:
    return resources.files("bot.bundled_personas")


def load_personas(user_dir: Path | None = None) -> PersonaSet:
    personas = _read_dir(bundled_dir(), "bundled personas")
    if user_dir is not None:
        if not user_dir.is_dir():
            raise PersonaError(f"personas_dir {user_dir} is not a directory")
        personas |= _read_dir(user_dir, str(user_dir))
    return PersonaSet(personas)
