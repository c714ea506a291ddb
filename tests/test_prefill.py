"""Which prompts a step reads (bot.model.llama_cpp.prefill): the fitted step cost, and the
plan for the prompts still being read, as tables."""

from __future__ import annotations

import pytest

from bot.model.llama_cpp.prefill import StepCost, prompt_parts


def line(fixed_s: float, row_s: float, sizes: tuple[int, ...] = (1, 4, 31, 508)) -> StepCost:
    """A step cost that has seen steps of these sizes take exactly fixed_s + row_s × rows."""
    cost = StepCost()
    for rows in sizes:
        cost.add(rows, fixed_s + row_s * rows)
    return cost


CPU = line(0.05, 0.025)  # rows are nearly all of a step (the bench model on 2 cores)
GPU = line(0.015, 0.0001)  # the fixed part is nearly all of it
UNKNOWN = StepCost()


def test_the_fit_finds_the_line_the_steps_lie_on() -> None:
    assert CPU.fit() == pytest.approx((0.05, 0.025))
    assert GPU.fit() == pytest.approx((0.015, 0.0001))


@pytest.mark.parametrize(
    "cost",
    [StepCost(), line(0.05, 0.025, sizes=(1,)), line(0.05, 0.025, sizes=(4, 4, 4, 4))],
    ids=["no steps", "one step", "steps of one size"],
)
def test_no_fit_while_the_steps_never_differed_in_size(cost: StepCost) -> None:
    assert cost.fit() is None


def test_recent_steps_outweigh_old_ones() -> None:
    cost = line(0.05, 0.025)
    for _ in range(300):  # the machine got twice as fast per row
        for rows in (1, 30):
            cost.add(rows, 0.05 + 0.0125 * rows)
    fixed_s, row_s = cost.fit() or (0.0, 0.0)
    assert row_s == pytest.approx(0.0125, rel=0.01) and fixed_s == pytest.approx(0.05, rel=0.05)


def test_a_fit_below_zero_is_taken_as_zero() -> None:
    assert line(-0.5, 0.01).fit() == pytest.approx((0.0, 0.01))


@pytest.mark.parametrize(
    ("cost", "remaining", "ready", "budget", "parts"),
    [
        # Four follow-ups at once (the first already read): unknown cost, share a step, as in
        # llama-server; on a CPU one a step; on a GPU one step.
        (UNKNOWN, [30, 30, 30], [30, 30, 30], 508, [30, 30, 30]),
        (CPU, [30, 30, 30], [30, 30, 30], 508, [30, 0, 0]),
        (GPU, [30, 30, 30], [30, 30, 30], 508, [30, 30, 30]),
        # Tiny parts join on a CPU too, while their rows cost less than a step of their own.
        (CPU, [2, 2, 2], [2, 2, 2], 508, [2, 2, 0]),
        # A short question behind a long text is read first, and where a chunk's rows cost
        # more than a step, in a step of its own.
        (UNKNOWN, [3000, 30], [508, 30], 508, [478, 30]),
        (CPU, [3000, 30], [508, 30], 508, [0, 30]),
        (GPU, [3000, 30], [508, 30], 508, [0, 30]),
        (GPU, [3000, 30], [508, 30], 100, [70, 30]),
        # The budget bounds the step; the shorter prompt takes it first.
        (GPU, [700, 600], [508, 508], 508, [0, 508]),
        # A picture next (nothing ready): the others go on.
        (CPU, [20, 40], [0, 40], 508, [0, 40]),
        # Nobody's first token waits for the second part: it joins while the budget allows.
        (CPU, [3000, 3000], [100, 508], 508, [100, 408]),
        (CPU, [], [], 508, []),
    ],
)
def test_prompt_parts(
    cost: StepCost, remaining: list[int], ready: list[int], budget: int, parts: list[int]
) -> None:
    assert prompt_parts(remaining, ready, budget, cost) == parts
