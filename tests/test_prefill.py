"""Which prompts a step reads (bot.model.llama_cpp.prefill), as a table."""

from __future__ import annotations

import pytest

from bot.model.llama_cpp.prefill import prompt_parts


@pytest.mark.parametrize(
    ("remaining", "ready", "budget", "parts"),
    [
        # A burst of follow-ups shares a step, as llama-server reads it.
        ([30, 26, 28], [30, 26, 28], 508, [30, 26, 28]),
        # A short question behind a long text is read first, and alone: the text's chunk would
        # delay its first token.
        ([3000, 30], [508, 30], 508, [0, 30]),
        ([3000, 30, 40], [508, 30, 40], 508, [0, 30, 40]),
        # With nothing to finish, the long text's chunk fills the step.
        ([3000], [508], 508, [508]),
        # The budget bounds the step, the shorter prompt first.
        ([700, 600], [508, 508], 508, [0, 508]),
        ([300, 250], [300, 250], 508, [0, 250]),
        ([300, 250, 10], [300, 250, 10], 200, [0, 0, 10]),
        # A picture next (nothing ready): the others go on.
        ([20, 40], [0, 40], 508, [0, 40]),
        # A prompt cut short before its picture is not finished: a whole one still joins it.
        ([50, 90], [20, 90], 508, [20, 90]),
        # Nobody's first token waits for the second chunk: it joins while the budget allows.
        ([3000, 3000], [100, 508], 508, [100, 408]),
        ([], [], 508, []),
    ],
)
def test_prompt_parts(
    remaining: list[int], ready: list[int], budget: int, parts: list[int]
) -> None:
    assert prompt_parts(remaining, ready, budget) == parts
