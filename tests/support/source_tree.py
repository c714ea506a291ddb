"""The project's modules as its source tree has them, for tests that must cover every one (the
import contracts, the packaging test) and so must not rely on a list kept by hand."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def modules_under(package: str, root: Path = ROOT) -> list[str]:
    """Every module of `package` (a folder under `root`), a package by its own name."""
    found = []
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found
