"""The figures `make bench`'s JSON line and `bench.gpu`'s share, named once for both.

Standard library only: bench.gpu imports it before its venv (and llama.cpp) exists.
"""

from __future__ import annotations

from typing import Any

# The small runs of CI's smoke test (bench.run_all --smoke, bench.gpu --tiny).
THROUGHPUT_SMOKE = ["--tiny", "--max-tokens", "24", "--repeats", "2"]
BATCHING_SMOKE = ["--tiny", "--tokens", "24", "--repeats", "1"]


def p1_figure(throughput: dict[str, Any]) -> dict[str, float]:
    """P1 from bench.throughput's JSON: the pipeline's tokens/s ÷ create_completion's."""
    return {"P1": throughput["ratio_vs_create_completion"]["p50"]}


def batching_figures(batching: dict[str, Any]) -> dict[str, float]:
    """P6 at every N above 1 (P6_n2, P6_n4), P6_scale4 and P3_streaming from bench.batching's
    JSON: the whole daemon ÷ raw llama.cpp at the same N, in one run."""
    ns = sorted(int(n) for n in batching["P6"])
    found = {f"P6_n{n}": batching["P6"][str(n)] for n in ns if n != 1}
    found[f"P6_scale{ns[-1]}"] = batching["P6_scale"]
    found["P3_streaming"] = batching["P3_streaming"]
    return found
