"""The settings reference and the example config are generated; they must match the code."""

from __future__ import annotations

from pathlib import Path

from bot.settings import load_settings
from tools.settings_doc import DOC, EXAMPLE, example_toml, settings_markdown


def test_reference_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == settings_markdown(), (
        "docs/settings.md is stale: run `python -m tools.settings_doc`"
    )
    assert EXAMPLE.read_text(encoding="utf-8") == example_toml(), (
        "config.example.toml is stale: run `python -m tools.settings_doc`"
    )


def test_example_config_is_valid_as_is_and_uncommented(tmp_path: Path) -> None:
    as_is = load_settings(EXAMPLE)
    uncommented = tmp_path / "all.toml"
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        body = line.removeprefix("# ")
        # Setting lines with a value become real settings; prose stays a comment.
        is_setting = line.startswith("# ") and " = " in body and body.split(" = ")[0].isidentifier()
        lines.append(body if is_setting else line)
    uncommented.write_text("\n".join(lines), encoding="utf-8")
    explicit = load_settings(uncommented)
    assert explicit.model_dump() == as_is.model_dump()
