"""bench/images.py's smoke form on the tiny model and projector (real libmtmd): the script keeps
working and its figures come out. The numbers are measured with a real projector, never here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.images import N_CTX, a_picture, longest_gap, stalls
from bot.model.llama_cpp.backend import LlamaCppBackend
from support.tinyprojector import IMAGE_TOKENS, require_mtmd

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_bench_runs_on_the_tiny_projector(tmp_path: Path) -> None:
    require_mtmd()
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    run = [sys.executable, "-m", "bench.images", "--tiny", "--repeats", "1", "--others", "1"]
    run += ["--threads", "1"]
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


async def test_a_busy_event_loop_does_not_hang_the_stall_measure(
    tiny_model: Path, tiny_projector: Path
) -> None:
    """On a loaded CI machine the bench waited for ever: the event loop coalesced the other
    reply's text into fewer updates than the measure waited for, and the picture's reply's end
    came with its first text, so reading the rest waited for an end already read. Here the loop
    is kept busy 50 ms at a time, so each update carries many of the tiny model's tokens."""
    require_mtmd()
    engine = await LlamaCppBackend.load(
        tiny_model, n_ctx=N_CTX, n_threads=1, parallel=2, mmproj=tiny_projector
    )
    loop = asyncio.get_running_loop()
    busy = True

    def hog() -> None:
        if busy:
            time.sleep(0.05)
            loop.call_soon(hog)

    loop.call_soon(hog)
    try:
        picture = a_picture(engine.info.image_side_px, None)
        gap, median = await asyncio.wait_for(stalls(engine, picture, 1, 0), 120)
        assert gap > 0 and median > 0
    finally:
        busy = False
        await engine.close()


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        ([[0.0, 1.0, 2.0, 6.0, 7.0]], 4.0),  # the gap that spans the picture's window
        ([[0.0, 1.0, 2.0, 3.0, 4.0, 5.2]], 1.2),  # text went on meanwhile: its longest gap
        # CI, a busy loop: no text of the other reply between the picture's arrival and its
        # first token (the measure said 0.0): the stall lasts at least until that token.
        ([[0.0, 1.0, 2.0]], 3.0),
        ([[0.0, 1.0], [0.5, 4.5]], 4.0),  # the longest of several replies'
    ],
)
def test_the_longest_gap_around_a_picture(stamps: list[list[float]], expected: float) -> None:
    assert longest_gap(stamps, arrived=2.2, seen=5.0) == pytest.approx(expected)
