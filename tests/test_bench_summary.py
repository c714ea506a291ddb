"""bench.harness.summary: the percentiles every benchmark reports stay within what was measured.

Two rounds of vs_server's long prompt (37.67 and 44.05 s) were reported with a p90 of 48.5 s:
the default quantile method extrapolates past the extremes of a small sample.
"""

from __future__ import annotations

import pytest

from bench.harness import summary

CASES = [
    # values, p50, p90
    ([37.67, 44.05], 40.86, 43.412),
    ([1.0, 2.0, 3.0], 2.0, 2.8),
    ([5.0], 5.0, 5.0),
    ([float(v) for v in range(1, 12)], 6.0, 10.0),
]


@pytest.mark.parametrize(("values", "p50", "p90"), CASES)
def test_percentiles_interpolate_between_the_measured_values(
    values: list[float], p50: float, p90: float
) -> None:
    found = summary(values)
    assert found["p50"] == pytest.approx(p50)
    assert found["p90"] == pytest.approx(p90)
    assert found["min"] <= found["p50"] <= found["p90"] <= found["max"]
