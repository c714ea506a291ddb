"""Generates docs/settings.md and config.example.toml from the settings models, so the
reference can never drift from the code. `python -m tools.settings_doc` (from the repository
root) rewrites both; with `--check` it only says which are stale (exit 1)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bot.settings import ENV_DELIMITER, ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "settings.md"
EXAMPLE = ROOT / "config.example.toml"


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            yield name, model


def _type_name(field: FieldInfo) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return (
            None
            if field.default_factory.__name__ == "default_data_dir"
            else field.get_default(call_default_factory=True)
        )
    return field.default


def _toml(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, ensure_ascii=False)


def settings_markdown() -> str:
    lines = [
        "# Settings reference",
        "",
        "Generated from `bot/settings.py` by `python -m tools.settings_doc`; do not edit by hand.",
        "",
        "Sources, strongest first: environment variables, the secrets directory (systemd",
        "credentials: `$CREDENTIALS_DIRECTORY`, one file per setting named like `model__path`),",
        "the TOML file (`--config FILE` or `$HEARTHBOT_CONFIG`, else `./hearthbot.toml`),",
        "then the defaults below. Unknown keys are errors.",
        "",
    ]
    for section, model in _sections():
        lines += [f"## [{section}]", "", "| key | type | default | env | meaning |"]
        lines.append("|---|---|---|---|---|")
        for key, field in model.model_fields.items():
            env = f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{key.upper()}"
            default = _default(field)
            shown = "(see meaning)" if default is None and field.default_factory else _toml(default)
            lines.append(
                f"| `{key}` | `{_type_name(field)}` | `{shown}` | `{env}` | "
                f"{field.description or ''} |"
            )
        lines.append("")
    return "\n".join(lines)


def example_toml() -> str:
    lines = [
        "# hearthbot configuration example. Every setting is shown with its default, commented",
        "# out. Copy to hearthbot.toml (or pass --config FILE) and uncomment what you change.",
        "# Reference: docs/settings.md. Secrets are better kept in the environment or in",
        "# systemd credentials than in this file.",
        "",
    ]
    for section, model in _sections():
        lines.append(f"[{section}]")
        for key, field in model.model_fields.items():
            if field.description:
                lines.append(f"# {field.description}")
            default = _default(field)
            lines.append(f"# {key} = {_toml(default)}" if default is not None else f"# {key} =")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.settings_doc",
        description="Rewrite docs/settings.md and config.example.toml from the settings models.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a file is stale"
    )
    args = parser.parse_args(argv)
    generated = {DOC: settings_markdown(), EXAMPLE: example_toml()}
    if args.check:
        stale = [p for p, text in generated.items() if _read(p) != text]
        for path in stale:
            print(f"{path} is stale: run `python -m tools.settings_doc`", file=sys.stderr)
        return 1 if stale else 0
    DOC.parent.mkdir(exist_ok=True)
    for path, text in generated.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {DOC} and {EXAMPLE}")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
