"""The architecture as the import graph shows it. `make test` runs the import contracts in
pyproject.toml ([tool.importlinter], `lint-imports`); these tests check what the contracts
cannot: no module imports itself through others (TYPE_CHECKING and function-level imports
count), the contract about the core names every core module, and the contracts catch what
they are there to catch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from support.import_graph import import_cycles
from support.source_tree import ROOT, modules_under

# bot's modules that are not the core: the process, and what runs llama.cpp (the backends and
# the chat template). The packages themselves (bot, bot.model) hold no code.
OUTSIDE_THE_CORE = ("bot.app", "bot.model.llama_cpp", "bot.model.openai", "bot.model.template")
HOLDING_NO_CODE = ("bot", "bot.model")


@pytest.mark.parametrize(
    ("imports", "cycles"),
    [
        ({}, []),
        ({"a": {"b"}, "b": {"c"}}, []),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"x": {"y"}, "y": {"x", "a"}, "a": {"b"}, "b": {"a"}}, [["a", "b"], ["x", "y"]]),
        ({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b", "d"}, "d": set()}, [["b", "c"]]),
    ],
)
def test_import_cycles(imports: dict[str, set[str]], cycles: list[list[str]]) -> None:
    assert import_cycles(imports) == cycles


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("bot", "adapters", cache_dir=None)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    cycles = import_cycles(imports)
    shown = []
    for cycle in cycles:
        for importer in cycle:
            for imported in sorted(imports[importer] & set(cycle)):
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = ", ".join(f"l.{d['line_number']}" for d in details)
                shown.append(f"{importer} -> {imported} ({lines})")
        shown.append("")
    assert not cycles, "modules that import each other:\n" + "\n".join(shown)


def core_contract() -> dict[str, list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    found: dict[str, list[str]] = next(c for c in contracts if c.get("id") == "core-libraries")
    return found


def within(module: str, packages: tuple[str, ...] | list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_core_contract_names_every_core_module() -> None:
    sources = core_contract()["source_modules"]
    core = [
        m
        for m in modules_under("bot")
        if m not in HOLDING_NO_CODE and not within(m, OUTSIDE_THE_CORE)
    ]
    unchecked = [m for m in core if not within(m, sources)]
    assert not unchecked, (
        f"{unchecked}: add them to the source_modules of the core-libraries contract in "
        "pyproject.toml (or to OUTSIDE_THE_CORE here, if they run llama.cpp)"
    )
    assert not [s for s in sources if s not in core], "a listed module that is gone"


# Imports that break the contracts, each in a module of its own so that the check does not
# depend on today's file names: (file, its text, the import lint-imports must report).
BREAKS = [
    (
        "bot/prompt/probe_llama.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import llama_cpp\n",
        "bot.prompt.probe_llama -> llama_cpp",
    ),
    (
        "bot/prompt/probe_template.py",
        "import bot.model.template\n",
        "bot.prompt.probe_template -> bot.model.template",
    ),
    (
        "adapters/probe_store.py",
        "def later():\n    from bot.store import Store\n",
        "adapters.probe_store -> bot.store",
    ),
    ("bot/model/probe_app.py", "import bot.app\n", "bot.model.probe_app -> bot.app"),
    (
        "bot/model/probe_daemon.py",
        "import bot.daemon\n",
        "bot.model.probe_daemon -> bot.daemon",
    ),
    ("bot/probe_unplaced.py", "", "- bot.probe_unplaced"),
]


@pytest.fixture
def broken_tree(tmp_path: Path) -> Iterator[Path]:
    for name in ("bot", "adapters"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    for path, text, _ in BREAKS:
        (tmp_path / path).write_text(text)
    yield tmp_path


def test_the_contracts_catch_what_they_are_for(broken_tree: Path) -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "lint-imports", "--no-cache"],  # import-linter's
        cwd=broken_tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(broken_tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = " ".join(result.stdout.split())  # lint-imports wraps long lines
    assert [line for _, _, line in BREAKS if line not in report] == [], result.stdout
