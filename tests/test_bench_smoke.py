"""CI runs every benchmark once on the tiny model: the scripts keep working and their figures
come out (the numbers themselves are measured with the real model, see bench/README.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from support.progress import run_progressing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_run_on_the_tiny_model(tmp_path: Path) -> None:
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    # run_all prints a line as each benchmark starts and ends: none takes this long on its own.
    result = run_progressing(
        [sys.executable, "-m", "bench.run_all", "--smoke"],
        cwd=ROOT,
        env=env,
        text=True,
        quiet_s=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) == {"overhead_p50_ms", "P1", "P2", "P3", "P5_excess_mb"} | {
        "KV_q8_ratio",
        "P2_q8",
        "P6_n2",
        "P6_n4",
        "P6_scale4",
        "P3_streaming",
        "P2_fixed_seed",
    }
    assert all(isinstance(v, float | int) for v in figures.values())
    # Warm follow-ups beat cold prompts even on the tiny model.
    assert figures["P2"] < 1
    for name in ("overhead", "throughput-tiny", "kv_reuse-tiny", "fairness-tiny", "memory-tiny"):
        assert (tmp_path / f"{name}.json").exists()
    # Quantized KV (issue 15): the tiny model's 32-wide heads give the block ratio exactly.
    assert figures["KV_q8_ratio"] == pytest.approx(34 / 64, abs=0.001)
    assert figures["P2_q8"] < 1
    for name in ("batching-tiny", "kv_reuse-fixed_seed-tiny"):
        assert (tmp_path / f"{name}.json").exists()
