"""`make bench`: every benchmark, each in its own process (so memory figures are its own),
then one line with the figures as JSON, e.g. {"P1": 0.98, "P2": 0.09, ...}.

    python -m bench.run_all            # the real model (HEARTHBOT_BENCH_MODEL or the fetch script)
    python -m bench.run_all --smoke    # the tiny test model, small sizes: CI's smoke test
    python -m bench.run_all --plot     # also the TTFT sweep and docs/performance.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.harness import RESULTS

SMOKE = {
    "overhead": ["--messages", "40", "--channels", "8"],
    "throughput": ["--tiny", "--max-tokens", "24", "--repeats", "2"],
    "kv_reuse": ["--tiny", "--length", "600", "--rounds", "1"],
    "fairness": ["--tiny", "--queued", "6", "--repeats", "1"],
    "memory": ["--tiny", "--messages", "100", "--channels", "10"],
}
FULL = {
    "overhead": [],
    "throughput": [],
    "kv_reuse": [],
    "fairness": [],
    "memory": [],
    "memory-tiny": ["--tiny"],
    # Side by side with llama-server (builds it once from the binding's vendored llama.cpp).
    "vs_server": [],
}


def run(name: str, args: list[str]) -> None:
    module = "bench." + name.removesuffix("-tiny").replace("-", "_")
    started = time.monotonic()
    print(f"== {module} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", module, *args], check=True)
    print(f"   ({time.monotonic() - started:.0f} s)", flush=True)


def figures(smoke: bool) -> dict[str, float]:
    suffix = "-tiny" if smoke else ""

    def load(name: str) -> dict:  # type: ignore[type-arg]
        return json.loads((RESULTS / f"{name}.json").read_text())

    found = {
        "overhead_p50_ms": load("overhead")["overhead_ms"]["p50"],
        "P1": load("throughput" + suffix)["ratio_vs_create_completion"]["p50"],
        "P2": load("kv_reuse" + suffix)["P2"],
        "P3": load("fairness" + suffix)["P3"],
        "P5_excess_mb": load("memory" + suffix)["P5_excess_mb"],
    }
    if not smoke:
        found["P5_tiny_growth_mb"] = load("memory-tiny")["second_half_growth_mb"]
    if not smoke:  # VS_burst_ttft, VS_burst_tps, VS_turns_ttft, VS_long_ttft
        found.update(load("vs_server")["ratios"])
    return {k: round(v, 3) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    for name, extra in (SMOKE if args.smoke else FULL).items():
        run(name, extra)
    if args.plot:
        run("kv_reuse", ["--sweep", *(["--tiny"] if args.smoke else [])])
        subprocess.run([sys.executable, "-m", "bench.plot"], check=True)
    print(json.dumps(figures(args.smoke)))


if __name__ == "__main__":
    main()
