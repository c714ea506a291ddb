"""House rules a machine can check: every public class says in one line what it is for, and a
module longer than ~350 lines says in its docstring why it is."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for top in ("bot", "adapters") for p in (ROOT / top).rglob("*.py"))
LONG = 350


def public_classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name[0] != "_"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_class_has_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text())
    missing = [
        f"{c.name} (line {c.lineno})" for c in public_classes(tree) if not ast.get_docstring(c)
    ]
    assert not missing, f"say in one line what each is for: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_says_why(path: Path) -> None:
    text = path.read_text()
    if text.count("\n") <= LONG:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "Longer than" in doc, f"{text.count(chr(10))} lines: split it by job, or say why not"


def test_the_rules_catch_what_they_are_for() -> None:
    tree = ast.parse("class Bare:\n    pass\n\nclass Said:\n    '''For x.'''\n")
    bare = [c.name for c in public_classes(tree) if not ast.get_docstring(c)]
    assert bare == ["Bare"]
    assert len(SOURCES) > 50, "the walk found the source tree"
