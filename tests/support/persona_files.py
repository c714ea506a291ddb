"""A persona for one test: written into tmp_path and made the default."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def only_persona(
    tmp_path: Path, name: str, max_tokens: int, temperature: float = 0.8
) -> dict[str, Any]:
    """Write personas/<name>.toml and return the `[bot]` settings that make it the default."""
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'description = "{name} (test)"\ntemperature = {temperature}\n'
        f'max_tokens = {max_tokens}\nsystem_prompt = "You are a test."\n'
    )
    return {"personas_dir": folder, "default_persona": name}
