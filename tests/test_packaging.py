"""A regular (non-editable) install, as docker/install.sh makes one, holds every module of the
source tree and the bundled personas. The editable install the tests otherwise use finds any
file in the checkout; a package left out of setup.py's discovery would only fail in the image.

The dependencies are this venv's (a .pth file points the new venv at them), so llama.cpp is
not compiled again; only hearthbot itself is built and installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.source_tree import ROOT, modules_under

pytestmark = pytest.mark.slow

# What the Dockerfile copies for docker/install.sh.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "bot", "adapters", "personas")

IMPORT_ALL = """
import importlib, json, sys
from importlib.resources import files
where = {name: importlib.import_module(name).__file__ for name in sys.argv[1:]}
bundled = files("bot.bundled_personas").iterdir()
personas = sorted(p.name for p in bundled if p.name.endswith(".toml"))
from bot.model.catalog import load_catalog
catalog = len(load_catalog())
print(json.dumps({"where": where, "personas": personas, "catalog": catalog}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with hearthbot installed from a copy of the sources; its dependencies
    from this venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    shared = [path for path in sys.path if Path(path).name == "site-packages"]
    # Lines of a .pth file join sys.path after the venv's own packages; the .pth files in
    # those folders (this checkout's editable install) are not read.
    (Path(own.stdout.strip()) / "dependencies.pth").write_text("\n".join(shared) + "\n")
    result = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", src],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=outside_env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return venv


def outside_env() -> dict[str, str]:
    """This environment without what would lead Python back to the checkout."""
    outside = ("HEARTHBOT_", "VIRTUAL_ENV", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(outside)}


def test_every_module_imports_from_the_install(installed: Path, tmp_path: Path) -> None:
    modules = modules_under("bot") + modules_under("adapters")
    result = subprocess.run(
        [installed / "bin" / "python", "-c", IMPORT_ALL, *modules],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # outside the source tree
        env=outside_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    elsewhere = {m: f for m, f in found["where"].items() if not f.startswith(str(installed))}
    assert not elsewhere, f"imported from outside the install: {elsewhere}"
    assert found["personas"] == sorted(p.name for p in (ROOT / "personas").glob("*.toml"))
    # The model catalog ships as package data (`model suggest`, `model pull <short-name>`).
    from bot.model.catalog import load_catalog

    assert found["catalog"] == len(load_catalog())


def test_the_command_runs_from_the_install(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [installed / "bin" / "hearthbot", "personas"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=outside_env() | {"HOME": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "assistant" in result.stdout and "storyteller" in result.stdout
