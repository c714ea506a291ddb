"""The waits on progress (tests/support/progress.py) that long runs use instead of fixed
budgets: a run may take as long as it needs while it gets somewhere, and no longer."""

from __future__ import annotations

import asyncio
import itertools
import sys

import pytest

from support.progress import Stall, run_progressing, until_progressing, wait_progressing


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (value, now) after Stall(quiet_s=10, value=0, now=0)
        ([(0, 5), (0, 10)], [False, False]),
        ([(0, 10.5)], [True]),
        ([(1, 8), (1, 17), (1, 18.5)], [False, False, True]),
        ([(1, 8), (2, 16), (3, 24), (3, 30)], [False, False, False, False]),
        ([(0, 11), (1, 12)], [True, False]),  # a stall ends when the value moves again
        ([("a", 3), ("a", 14)], [False, True]),
    ],
)
def test_stall(steps: list[tuple[object, float]], expected: list[bool]) -> None:
    stall = Stall(10, 0, 0)
    assert [stall.stalled(value, now) for value, now in steps] == expected


async def test_a_wait_outlasts_quiet_s_while_progressing() -> None:
    ticks = itertools.count()

    async def slow() -> str:
        await asyncio.sleep(0.6)
        return "done"

    # The count changes on every look: 0.6 s is fine with 0.2 s of quiet allowed.
    assert await wait_progressing(slow(), lambda: next(ticks), 0.2, "slow") == "done"


async def test_a_wait_without_progress_fails() -> None:
    never = asyncio.Event()
    with pytest.raises(AssertionError, match=r"no progress in 0\.2 s waiting for nothing"):
        await wait_progressing(never.wait(), lambda: 0, 0.2, "nothing")


async def test_until_progressing() -> None:
    count = 0

    async def count_up() -> None:
        nonlocal count
        for _ in range(10):
            await asyncio.sleep(0.05)
            count += 1

    counting = asyncio.create_task(count_up())
    await until_progressing(lambda: count == 10, lambda: count, 0.3, "ten")
    await counting
    with pytest.raises(AssertionError, match="no progress"):
        await until_progressing(lambda: count == 11, lambda: count, 0.2, "eleven")


def test_run_progressing_lets_a_chatty_run_take_its_time() -> None:
    script = "import sys, time\nfor n in range(8):\n    print(n, flush=True); time.sleep(0.1)"
    done = run_progressing([sys.executable, "-c", script], quiet_s=0.5, text=True)
    assert done.returncode == 0 and done.stdout.split() == [str(n) for n in range(8)]
    echoed = run_progressing(
        [sys.executable, "-c", "import sys; sys.stderr.write(sys.stdin.read())"],
        quiet_s=5,
        input="piped in",
    )
    assert echoed.stderr == b"piped in"


def test_run_progressing_kills_a_silent_run() -> None:
    script = "print('started', flush=True); import time; time.sleep(60)"
    with pytest.raises(AssertionError, match=r"no progress in 0\.5 s"):
        run_progressing([sys.executable, "-c", script], quiet_s=0.5)
