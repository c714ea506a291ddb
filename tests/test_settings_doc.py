"""The settings reference and the example config are generated; they must match the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import load_settings
from tools import settings_doc
from tools.settings_doc import DOC, EXAMPLE, ROOT, example_toml, settings_markdown


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


def test_runs_as_a_module_from_the_repository_root() -> None:
    # As a developer runs it: no PYTHONPATH, tools/ found from the working directory.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "tools.settings_doc", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_stale_files_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, example = tmp_path / "docs" / "settings.md", tmp_path / "config.example.toml"
    monkeypatch.setattr(settings_doc, "DOC", doc)
    monkeypatch.setattr(settings_doc, "EXAMPLE", example)
    example.write_text(example_toml(), encoding="utf-8")
    assert settings_doc.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"{doc} is stale" in err and str(example) not in err
    assert not doc.exists()
    assert settings_doc.main([]) == 0  # writes both
    assert doc.read_text(encoding="utf-8") == settings_markdown()
    assert settings_doc.main(["--check"]) == 0
