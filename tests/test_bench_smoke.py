"""CI runs every benchmark once on the tiny model: the scripts keep working and their figures
come out (the numbers themselves are measured with the real model, see bench/README.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.run_all import SUMMARY_SMOKE
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
        "SIZE_SPEED",
        "P2_summaries",
        "P2_summaries_reused_share",
        "IDLE_parked_ratio",
    }
    assert all(isinstance(v, float | int) for v in figures.values())
    # Warm follow-ups beat cold prompts even on the tiny model.
    assert figures["P2"] < 1
    for name in ("overhead", "throughput-tiny", "kv_reuse-tiny", "fairness-tiny", "memory-tiny"):
        assert (tmp_path / f"{name}.json").exists()
    # Quantized KV (issue 15): the tiny model's 32-wide heads give the block ratio exactly.
    assert figures["KV_q8_ratio"] == pytest.approx(34 / 64, abs=0.001)
    assert figures["P2_q8"] < 1
    assert figures["IDLE_parked_ratio"] > 0
    for name in (
        "batching-tiny",
        "kv_reuse-fixed_seed-tiny",
        "summary_reuse-tiny",
        "idle_cells-tiny",
    ):
        assert (tmp_path / f"{name}.json").exists()
    assert figures["P2_summaries_reused_share"] > 0


def test_p2_with_summaries_runs_through_the_daemon(tmp_path: Path) -> None:
    """bench.summary_reuse on the tiny model: the channel trims, summaries are written and
    shown, and the turns between trims reuse their prefix."""
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    result = run_progressing(
        [sys.executable, "-m", "bench.summary_reuse", *SUMMARY_SMOKE],
        cwd=ROOT,
        env=env,
        text=True,
        quiet_s=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    found = json.loads((tmp_path / "summary_reuse-tiny.json").read_text())
    assert found["trims"] >= 2 and found["summaries_written"] >= 1
    assert found["turns_measured"] >= 1  # turns between trims that showed a summary
    assert found["reused_share_min"] > 0
    assert found["P2_summaries"] > 0


def test_the_llama_server_comparison_runs_hearthbots_side(tmp_path: Path) -> None:
    """bench.vs_server's workloads through the daemon on the tiny model, and the prompts it
    would send llama-server checked against hearthbot's, token for token (CI builds no
    llama-server: the real comparison is `make bench`'s)."""
    env = os.environ | {"HEARTHBOT_BENCH_RESULTS": str(tmp_path)}
    small = ["--rounds", "2", "--length", "100", "--long", "200", "--max-tokens", "8"]
    result = run_progressing(
        [sys.executable, "-m", "bench.vs_server", "--tiny", "--no-server", *small],
        cwd=ROOT,
        env=env,
        text=True,
        quiet_s=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    found = json.loads((tmp_path / "vs_server-tiny.json").read_text())
    # TTFTs measured (long: the long prompt's) and replies counted (long: the streams' too),
    # in each of the two rounds.
    for name, timed, replies in (("burst", 8, 8), ("turns", 16, 16), ("long", 2, 8)):
        ours = found[name]["hearthbot"]
        assert ours["ttft_s"]["n"] == timed
        assert ours["tokens_per_s"] > 0
        # Every reply is max_tokens long (end tokens banned), as llama-server's with ignore_eos.
        assert ours["tokens"] == replies * 8
    same, total = map(int, found["same_prompts"].split("/"))
    assert same == total > 0


def test_vs_server_ratios_of_the_workloads_run_only() -> None:
    """`--only burst`: the figures of the burst alone (the run's settings sit beside the
    workloads in the result, and one of them must not pass for a workload)."""
    from bench.vs_server import ratios

    def side(ttft: float, tps: float) -> dict[str, object]:
        return {"ttft_s": {"p50": ttft}, "tokens_per_s": tps}

    burst = {"hearthbot": side(1.0, 30.0), "llama-server": side(0.5, 40.0)}
    result = {"length": 1200, "long": 3000, "max_tokens": 64, "burst": burst}
    assert ratios(result) == {"VS_burst_ttft": 0.5, "VS_burst_tps": 0.75}


async def test_the_sweeps_no_reuse_series_reuses_only_the_last_channel(tiny_model: Path) -> None:
    """docs/performance.png's "no per-channel reuse" lines: one resident sequence, as llama.cpp
    keeps, so one channel still reuses its prefix and four taking turns do not (the engine's
    pool of resident channels made them reuse as much as with per-channel reuse)."""
    from bench.kv_reuse import sweep

    rows = {row["series"]: row for row in await sweep(tiny_model, [200], rounds=1)}
    assert rows["1 channel, no per-channel reuse"]["reused_share"] > 0.8
    assert rows["4 channels, per-channel reuse"]["reused_share"] > 0.8
    assert rows["4 channels, no per-channel reuse"]["reused_share"] < 0.2
