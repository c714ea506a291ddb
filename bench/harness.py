"""Shared pieces of the benchmarks: models, a daemon wired like `hearthbot run`, results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import Generation, GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("HEARTHBOT_BENCH_RESULTS") or ROOT / "bench" / "results")
FETCH = ROOT.parent / "shared" / "bench-model" / "fetch"


def repack() -> bool:
    """llama.cpp's CPU weight repacking, unless HEARTHBOT_BENCH_NO_REPACK=1: a VM that reports
    AMX but traps on it (SIGILL at load) needs it off."""
    return os.environ.get("HEARTHBOT_BENCH_NO_REPACK", "") in ("", "0")


def tiny_model(wide_heads: bool = False) -> Path:
    """The test suite's generated GGUF (for smoke runs and model-excluded overhead);
    `wide_heads`: its variant whose heads fit a quantized KV block."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.tinymodel import tiny_model_path

    return tiny_model_path(RESULTS / "models", wide_heads)


def real_model() -> Path:
    """A real small chat model: $HEARTHBOT_BENCH_MODEL, else the workplace's fetch script."""
    if path := os.environ.get("HEARTHBOT_BENCH_MODEL"):
        return Path(path)
    if not FETCH.exists():
        raise SystemExit(f"set HEARTHBOT_BENCH_MODEL to a GGUF file (no {FETCH} here)")
    out = subprocess.run([str(FETCH)], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


class RecordingEngine(LlamaCppBackend):
    """The real engine, keeping each generation so a benchmark can read its timings."""

    def __init__(self) -> None:
        super().__init__()
        self.generations: list[Generation] = []
        self.force: dict[str, Any] = {}

    def start(self, request: GenerationRequest) -> Generation:
        if self.force:
            from dataclasses import replace

            request = replace(request, **self.force)
        generation = super().start(request)
        self.generations.append(generation)
        return generation


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    # "inclusive" interpolates between measured values; the default extrapolates past the
    # extremes of a small sample (two rounds of 37.7 and 44.1 s gave a p90 of 48.5 s).
    many = len(ordered) > 1
    q = statistics.quantiles(ordered, n=100, method="inclusive") if many else [ordered[0]] * 99
    return {
        "n": len(ordered),
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "p90": q[89],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "stdev": statistics.pstdev(ordered),
    }


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def percentile_rows(named: dict[str, dict[str, float]], digits: int) -> list[list[str]]:
    """[name, p50, p90, max] rows of `summary()` results, for `table()`."""
    return [
        [name, *(f"{s[key]:.{digits}f}" for key in ("p50", "p90", "max"))]
        for name, s in named.items()
    ]


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
