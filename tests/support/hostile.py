"""The hostile-input corpus (tests/data/hostile_inputs.json), for every adapter's tests."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).parent.parent / "data" / "hostile_inputs.json"


def hostile_cases() -> list[tuple[str, str]]:
    """(id, text) pairs; long cases are expanded from their repeat × times form."""
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    return [
        (case["id"], case["text"] if "text" in case else case["repeat"] * case["times"])
        for case in cases
    ]
