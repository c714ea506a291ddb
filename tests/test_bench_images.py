"""bench/images.py's smoke form on the tiny model and projector (real libmtmd): the script keeps
working and its figures come out. The numbers are measured with a real projector, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.tinyprojector import IMAGE_TOKENS, require_mtmd

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_bench_runs_on_the_tiny_projector(tmp_path: Path) -> None:
    require_mtmd()
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    run = [sys.executable, "-m", "bench.images", "--tiny", "--repeats", "1", "--others", "1"]
    run += ["--tokens", "8", "--threads", "1"]
    result = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((tmp_path / "images-tiny.json").read_text())
    assert figures["image_tokens"] == IMAGE_TOKENS
    for name in ("IMG_ttft_s", "IMG_ttft_ratio", "IMG_eval_s", "IMG_gap_s", "IMG_gap_ratio"):
        assert figures[name] > 0, name
    assert "others' longest gap meanwhile" in result.stdout


def test_without_a_projector_it_says_what_it_needs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HEARTHBOT_BENCH_MMPROJ"}
    env["HEARTHBOT_BENCH_MODEL"] = str(tmp_path / "model.gguf")
    result = subprocess.run(
        [sys.executable, "-m", "bench.images"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "--mmproj FILE or HEARTHBOT_BENCH_MMPROJ" in result.stderr
