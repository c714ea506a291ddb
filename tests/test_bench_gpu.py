"""bench.gpu cannot run on a GPU here: what it would run, the JSON line it prints (make bench's
keys), its run on the CPU on the tiny model, and its error where llama.cpp sees no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import figures
from support.progress import run_progressing

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
    assert commands[-1] == f"$ {python} -m bench.batching"
    assert not (tmp_path / "v").exists()  # nothing made


def test_the_json_line_has_make_benchs_keys() -> None:
    throughput = {"ratio_vs_create_completion": {"p50": 0.98123}}
    batching = {
        "P6": {"1": 0.95, "2": 0.94, "4": 0.9312},
        "P6_scale": 0.97049,
        "P3_streaming": 1.2801,
        "raw_aggregate_tok_s": {"1": 190.54, "2": 330.0, "4": 520.21},
    }
    line = figures(throughput, batching, "CUDA0 — NVIDIA GeForce RTX 3060")
    assert line == {
        "device": "CUDA0 — NVIDIA GeForce RTX 3060",
        "P1": 0.981,
        "P6_n2": 0.94,
        "P6_n4": 0.931,
        "P6_scale4": 0.97,
        "P3_streaming": 1.28,
        "gpu_tok_s_1": 190.5,
        "gpu_tok_s_2": 330.0,
        "gpu_tok_s_4": 520.2,
    }


@pytest.mark.slow
def test_it_runs_make_benchs_p6_on_the_cpu(tmp_path: Path) -> None:
    """`--cpu --tiny`: bench.throughput and bench.batching on the tiny model in this interpreter;
    the line's P1/P6/P3 figures are the ones make bench's line shows for the same results."""
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    result = run_progressing(
        [sys.executable, "-m", "bench.gpu", "--cpu", "--tiny"],
        cwd=ROOT,
        env=env,
        text=True,
        quiet_s=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["device"] == "CPU"
    assert set(line) == {"device", "P1", "P6_n2", "P6_n4", "P6_scale4", "P3_streaming"} | {
        "gpu_tok_s_1",
        "gpu_tok_s_2",
        "gpu_tok_s_4",
    }
    assert all(line[f"gpu_tok_s_{n}"] > 0 for n in (1, 2, 4))
    # Read from the JSON bench.batching writes for make bench (batching-tiny.json there).
    throughput = json.loads((tmp_path / "throughput-tiny.json").read_text())
    batching = json.loads((tmp_path / "batching-tiny.json").read_text())
    assert line == figures(throughput, batching, "CPU")
    assert line["P6_n4"] == round(batching["P6"]["4"], 3) > 0


def test_without_a_gpu_build_it_stops_with_a_clear_error(tmp_path: Path) -> None:
    """Pointed at an interpreter whose llama.cpp was built for the CPU (this one), it says so
    and measures nothing, rather than reporting CPU figures as a GPU's."""
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--python", sys.executable, "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "sees no GPU" in out.stderr and "nothing was measured" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("*.json"))
