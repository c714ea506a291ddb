"""bench.plot's TTFT plot: at P2's length the points come from bench.kv_reuse's P2 run, which
make bench does not measure twice."""

from __future__ import annotations

from typing import Any

from bench.plot import with_p2

SWEEP = [
    {"series": "4 channels, per-channel reuse", "length": 250, "ttft_s": 0.2},
    {"series": "cold (whole prompt)", "length": 250, "ttft_s": 2.0},
]


def p2_run(**changes: Any) -> dict[str, Any]:
    run = {
        "channels": 4,
        "length": 1500,
        "fixed_seed": False,
        "warm_ttft_s": {"p50": 0.4},
        "cold_ttft_s": {"p50": 17.4},
    }
    return run | changes


def test_p2s_run_adds_the_four_channel_and_cold_points_at_its_length() -> None:
    assert with_p2(SWEEP, p2_run()) == [
        *SWEEP,
        {"series": "4 channels, per-channel reuse", "length": 1500, "ttft_s": 0.4},
        {"series": "cold (whole prompt)", "length": 1500, "ttft_s": 17.4},
    ]


def test_nothing_is_added_that_the_sweep_measured_or_that_is_not_p2() -> None:
    assert with_p2(SWEEP, None) == SWEEP
    assert with_p2(SWEEP, p2_run(length=250)) == SWEEP  # the sweep has that point
    assert with_p2(SWEEP, p2_run(channels=2)) == SWEEP  # another series
    assert with_p2(SWEEP, p2_run(fixed_seed=True)) == SWEEP  # P2_fixed_seed's run
