"""bot.status: the daemon's status snapshot and the one adapter-connection check."""

from __future__ import annotations

import pytest

from bot.status import DaemonStatus, is_connected


class Adapter:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def is_connected(self) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "connected"),
    [(True, True), (False, False), (1, True), (None, False), (RuntimeError("broken"), False)],
)
def test_is_connected(answer: object, connected: bool) -> None:
    assert is_connected(Adapter(answer)) is connected  # type: ignore[arg-type]


def test_disconnected_names_the_adapters_that_are_down_in_order() -> None:
    status = DaemonStatus(
        queued=0,
        answering=0,
        slots=1,
        answered=0,
        stopping=False,
        adapters={"console": True, "discord": False, "matrix": False},
    )
    assert status.disconnected == ["discord", "matrix"]


@pytest.mark.parametrize(
    ("store_problem", "degraded"),
    [
        (None, None),
        ("database or disk is full", "degraded: store (database or disk is full)"),
        ("database is locked", "degraded: store (database is locked)"),
    ],
)
def test_degraded_says_what_works_only_in_part(
    store_problem: str | None, degraded: str | None
) -> None:
    status = DaemonStatus(
        queued=0,
        answering=0,
        slots=1,
        answered=0,
        stopping=False,
        adapters={"console": False},  # a platform that is down is not "degraded": see readyz
        store_problem=store_problem,
    )
    assert status.degraded == degraded
