"""bench.gpu cannot run here (no GPU): what it would run, and the JSON line it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.gpu import figures

ROOT = Path(__file__).resolve().parent.parent


def test_the_dry_run_builds_for_cuda_and_runs_p1_and_p6(tmp_path: Path) -> None:
    # As under `make` (which exports the CPU build's CMAKE_ARGS): the CUDA build sets its own,
    # and the benchmarks run without any.
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--dry-run", "--venv", str(tmp_path / "v")],
        cwd=ROOT,
        env=os.environ | {"CMAKE_ARGS": "-DLLAVA_BUILD=ON"},
        capture_output=True,
        text=True,
        check=True,
    )
    commands = [line for line in out.stdout.splitlines() if line.startswith("$ ")]
    python = str(tmp_path / "v" / "bin" / "python")
    assert any(f"-m pip install --quiet -e {ROOT}[test,bench]" in c for c in commands)
    (build,) = [c for c in commands if "--force-reinstall" in c]
    assert build.startswith("$ CMAKE_ARGS='-DLLAVA_BUILD=ON -DGGML_CUDA=on' " + python)
    assert "--no-cache-dir --no-deps llama-cpp-python==" in build
    assert commands[-2] == f"$ {python} -m bench.throughput"
    assert commands[-1] == f"$ {python} -m bench.batched_reference --engine"
    assert not (tmp_path / "v").exists()  # nothing made


def test_the_json_line() -> None:
    throughput = {"ratio_vs_create_completion": {"p50": 0.98123}}
    batched = {
        "engine_ratio": {"1": 0.95, "2": 0.94, "4": 0.9312},
        "aggregate_tok_s": {"1": 190.54, "2": 330.0, "4": 520.21},
    }
    line = figures(throughput, batched, "CUDA0 — NVIDIA GeForce RTX 3060")
    assert line == {
        "device": "CUDA0 — NVIDIA GeForce RTX 3060",
        "P1": 0.981,
        "P6": 0.931,
        "gpu_tok_s_1": 190.5,
        "gpu_tok_s_2": 330.0,
        "gpu_tok_s_4": 520.2,
    }
