"""`make bench`: every benchmark, each in its own process (so memory figures are its own),
then one line with the figures as JSON, e.g. {"P1": 0.98, "P2": 0.09, ...}.

    python -m bench.run_all            # the real model (HEARTHBOT_BENCH_MODEL or the fetch script)
    python -m bench.run_all --smoke    # the tiny test model, small sizes: CI's smoke test
    python -m bench.run_all --plot     # also the TTFT sweep and docs/performance.png
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.figures import BATCHING_SMOKE, THROUGHPUT_SMOKE, batching_figures, p1_figure
from bench.harness import RESULTS

# Issue #18: P2 with rolling summaries on, through the daemon (a small window: trims come fast).
SUMMARY_SMOKE = ["--tiny", "--n-ctx", "512", "--trims", "2", "--summary-tokens", "64"]
SUMMARY_SMOKE += ["--max-tokens", "16"]
SMOKE = {
    "overhead": ["--messages", "40", "--channels", "8"],
    "throughput": THROUGHPUT_SMOKE,
    "kv_reuse": ["--tiny", "--length", "600", "--rounds", "1"],
    "fairness": ["--tiny", "--queued", "6", "--repeats", "1"],
    "memory": ["--tiny", "--messages", "100", "--channels", "10"],
    "kv_type": ["--tiny", "--length", "300", "--channels", "2"],
    "idle_cells": ["--tiny", "--idle", "3", "--length", "200", "--repeats", "1", "--tokens", "8"],
    "footprint": ["--tiny", "--tokens", "16", "--repeats", "1", "--length", "300"],
    "size_speed": ["--tiny", "--repeats", "1", "--tokens", "8"],
    "summary_reuse": SUMMARY_SMOKE,
}
# make bench must end within 30 minutes on the 2-core development machine (issue 14): each
# figure measured as often as its spread needs, not more (bench/README.md, "Durations").
FULL = {
    "overhead": [],
    "throughput": [],
    "kv_reuse": ["--rounds", "1"],  # 4 follow-ups, each ÷ the same prompt cold (P2 ≪ its goal)
    "fairness": [],
    "memory": [],
    "memory-tiny": ["--tiny"],
    "kv_type": [],  # P2_q8: one round of 4 (flash attention, which q8_0's V cache needs, is slow)
    "idle_cells": ["--repeats", "3"],
    "footprint": ["--repeats", "2"],
    "size_speed": [],
    "summary_reuse": ["--trims", "2"],
    # Side by side with llama-server (builds it once from the binding's vendored llama.cpp).
    "vs_server": ["--rounds", "1"],
}
# The TTFT sweep behind docs/performance.png (--plot), below P2's 1,500 tokens: bench.plot
# takes the 1,500-token points from kv_reuse's P2 run, which measures the same thing.
SWEEP = ["--sweep", "--lengths", "250,750", "--rounds", "1"]

# Issue #14 (many conversations at once): name → (module, smoke arguments, full arguments).
BATCHING = {
    "batching": ("batching", BATCHING_SMOKE, ["--repeats", "3"]),
    "kv_reuse-fixed_seed": (
        "kv_reuse",
        ["--tiny", "--fixed-seed", "--length", "600", "--rounds", "1"],
        ["--fixed-seed", "--rounds", "3"],
    ),
}


def fixed_seed_figure(smoke: bool) -> dict[str, float]:
    """P2_fixed_seed (bench.kv_reuse --fixed-seed)."""
    suffix = "-tiny" if smoke else ""
    fixed = json.loads((RESULTS / f"kv_reuse-fixed_seed{suffix}.json").read_text())
    return {"P2_fixed_seed": fixed["P2_fixed_seed"]}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(name: str, args: list[str], module: str | None = None) -> float:
    """Runs one benchmark in its own process; its wall-clock seconds. Its CPU seconds are
    printed too: on a shared machine they move less with the load than the wall clock."""
    module = "bench." + (module or name.removesuffix("-tiny").replace("-", "_"))
    started, cpu = time.monotonic(), children_cpu_s()
    print(f"== {module} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", module, *args], check=True)
    took = time.monotonic() - started
    print(f"   ({took:.0f} s, {children_cpu_s() - cpu:.0f} s CPU)", flush=True)
    return took


def figures(smoke: bool) -> dict[str, float]:
    suffix = "-tiny" if smoke else ""

    def load(name: str) -> dict:  # type: ignore[type-arg]
        return json.loads((RESULTS / f"{name}.json").read_text())

    found = {
        "overhead_p50_ms": load("overhead")["overhead_ms"]["p50"],
        **p1_figure(load("throughput" + suffix)),
        "P2": load("kv_reuse" + suffix)["P2"],
        "P3": load("fairness" + suffix)["P3"],
        "P5_excess_mb": load("memory" + suffix)["P5_excess_mb"],
    }
    if not smoke:
        found["P5_tiny_growth_mb"] = load("memory-tiny")["second_half_growth_mb"]
    # Idle channels parked while replies generate (issue 14): bench.idle_cells.
    found["IDLE_parked_ratio"] = load("idle_cells" + suffix)["IDLE_parked_ratio"]
    # Quantized KV (issue 15): bench.kv_type.
    kv_type = load("kv_type" + suffix)
    found["KV_q8_ratio"], found["P2_q8"] = kv_type["KV_q8_ratio"], kv_type["P2_q8"]
    # Many conversations at once (issue 14): bench.batching, the same keys as bench.gpu's.
    found |= batching_figures(load("batching" + suffix)) | fixed_seed_figure(smoke)
    # model suggest's premise (issue 19): speed ∝ 1 / file size.
    found["SIZE_SPEED"] = load("size_speed" + suffix)["SIZE_SPEED"]
    summaries = load("summary_reuse" + suffix)  # issue #18: P2 with summaries on
    found["P2_summaries"] = summaries["P2_summaries"]
    found["P2_summaries_reused_share"] = summaries["reused_share"]["p50"]
    if not smoke:  # VS_burst_ttft, VS_burst_tps, VS_turns_ttft, VS_long_ttft
        found.update(load("vs_server")["ratios"])
    return {k: round(v, 3) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    took = {name: run(name, extra) for name, extra in (SMOKE if args.smoke else FULL).items()}
    for name, (module, smoke_args, full_args) in BATCHING.items():
        took[name] = run(name, smoke_args if args.smoke else full_args, module)
    if args.plot:
        took["kv_reuse-sweep"] = run("kv_reuse", ["--sweep", "--tiny"] if args.smoke else SWEEP)
        subprocess.run([sys.executable, "-m", "bench.plot"], check=True)
    # Seconds per benchmark and in all (the goal: make bench within 30 minutes, issue 14).
    print(", ".join(f"{name} {s:.0f}" for name, s in took.items()), "seconds")
    print(f"all: {time.monotonic() - started:.0f} s", flush=True)
    print(json.dumps(figures(args.smoke)))


if __name__ == "__main__":
    main()
