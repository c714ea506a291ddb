"""bot.backoff: the waits between retries (platform reconnects, a failing store)."""

from __future__ import annotations

import pytest

from bot.backoff import Backoff


@pytest.mark.parametrize(
    ("first", "cap", "waits"),
    [
        (0.5, 15.0, [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]),
        (5.0, 300.0, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]),
        (1.0, 1.0, [1.0, 1.0, 1.0]),
        (4.0, 3.0, [4.0, 3.0, 3.0]),  # a first wait above the cap is still waited once
    ],
)
def test_backoff_doubles_up_to_its_cap(first: float, cap: float, waits: list[float]) -> None:
    backoff = Backoff(first, cap)
    assert [backoff.next() for _ in waits] == waits


def test_backoff_starts_over_after_a_success() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(4):
        backoff.next()
    assert backoff.delay == 16.0  # what the next retry would wait
    backoff.reset()
    assert [backoff.next(), backoff.next()] == [1.0, 2.0]
