"""The arrows between the folders point down: app → adapters → core → model types. Each
rule imports a layer's modules in a fresh interpreter and looks at what came along."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The only modules that may load llama.cpp (the backends and the template they share).
LLAMA_CPP_USERS = ("bot/model/llama_cpp/", "bot/model/openai/", "bot/model/template.py")
PLATFORMS = ("discord", "nio")


def modules(folder: str, *, leaving_out: tuple[str, ...] = ()) -> list[str]:
    """The importable module names under `folder` (found as files, so nothing is imported
    here), except those whose path starts with one in `leaving_out`."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(leaving_out):
            continue
        name = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        found.append(name)
    return found


def loaded_by(names: list[str]) -> set[str]:
    """Every module in sys.modules after a fresh interpreter imported `names`."""
    probe = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def within(loaded: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in packages))


CORE = modules("bot", leaving_out=("bot/app/", *LLAMA_CPP_USERS))


@pytest.mark.parametrize(
    ("layer", "names", "forbidden"),
    [
        # The core runs without the model library: it only speaks bot.model's types.
        ("core", CORE, ("llama_cpp", *PLATFORMS, "adapters", "bot.app")),
        ("model", modules("bot/model"), (*PLATFORMS, "adapters", "bot.app", "bot.daemon")),
        (
            "adapters",
            modules("adapters"),
            ("llama_cpp", "bot.model.llama_cpp", "bot.model.openai", "bot.store", "bot.app"),
        ),
    ],
)
def test_imports_point_down(layer: str, names: list[str], forbidden: tuple[str, ...]) -> None:
    assert names, layer
    assert within(loaded_by(names), forbidden) == [], layer
