"""bot.prompt.window: the rolling context window (properties of choose_window)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.prompt.window import (
    TRIM_SLACK,
    Turn,
    Window,
    chat_messages,
    choose_window,
    speaker_text,
)


@dataclass(frozen=True)
class History:
    costs: list[int]
    is_user: list[bool]


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Alternating or random roles; the last turn (the new message) is always a user's."""
    n = draw(st.integers(1, 60))
    costs = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    if draw(st.booleans()):
        # alternating, ending with a user turn
        is_user = [(n - 1 - i) % 2 == 0 for i in range(n)]
    else:
        is_user = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    is_user[-1] = True
    return History(costs, is_user)


budgets = st.integers(50, 4000)


@st.composite
def cases(draw: st.DrawFn) -> tuple[History, int, int]:
    history = draw(histories())
    start = draw(st.integers(0, len(history.costs) - 1))
    return history, draw(budgets), start


@given(cases())
def test_none_iff_last_turn_alone_does_not_fit(case: tuple[History, int, int]) -> None:
    history, budget, start = case
    window = choose_window(history.costs, history.is_user, budget, start)
    assert (window is None) == (history.costs[-1] > budget)


@given(cases())
def test_window_properties(case: tuple[History, int, int]) -> None:
    history, budget, start = case
    costs, last = history.costs, len(history.costs) - 1
    assume(costs[-1] <= budget)
    window = choose_window(costs, history.is_user, budget, start)
    assert isinstance(window, Window)
    total = sum(costs[window.start :])
    # the prompt always fits, and the new message is always kept
    assert total <= budget
    assert window.start <= last
    # the start only moves forward
    assert window.start >= start
    assert window.trimmed == (window.start > 0)
    if sum(costs[start:]) <= budget:
        # it fits: nothing moves, so the prompt's prefix is unchanged
        assert window.start == start
    else:
        # trimmed: opens with a question, and leaves slack unless only the new message is left
        assert window.start > start
        assert history.is_user[window.start]
        if window.start < last:
            assert total <= budget * (1 - TRIM_SLACK)


@given(cases(), st.floats(0.0, 0.9))
def test_slack_is_respected(case: tuple[History, int, int], slack: float) -> None:
    history, budget, start = case
    costs, last = history.costs, len(history.costs) - 1
    assume(costs[-1] <= budget and sum(costs[start:]) > budget)
    window = choose_window(costs, history.is_user, budget, start, slack=slack)
    assert window is not None
    if window.start < last:
        assert sum(costs[window.start :]) <= budget * (1 - slack)
    # minimal trim: keeping one more user turn from before would break the slack
    earlier = [i for i in range(start, window.start) if history.is_user[i]]
    if earlier:
        assert sum(costs[earlier[-1] :]) > budget * (1 - slack)


def test_empty_history_is_none() -> None:
    assert choose_window([], [], 1000) is None


@pytest.mark.parametrize(
    ("costs", "is_user", "budget", "start", "expected"),
    [
        # fits: nothing trimmed
        ([10, 10, 10], [True, False, True], 100, 0, Window(0, trimmed=False)),
        # fits from a previous start: the start stays
        ([10, 10, 10], [True, False, True], 100, 1, Window(1, trimmed=True)),
        # too big: drop down to the slack target (int(90 * 2/3) = 60), at a user turn
        ([40, 40, 20, 20, 20], [True, False, True, False, True], 90, 0, Window(2, trimmed=True)),
        # the new message alone fits exactly
        ([500, 100], [True, True], 100, 0, Window(1, trimmed=True)),
        # a start beyond the end is clamped to the new message
        ([10, 10], [True, True], 100, 5, Window(1, trimmed=True)),
        # the new message alone does not fit
        ([10, 101], [True, True], 100, 0, None),
    ],
)
def test_choose_window_table(
    costs: list[int], is_user: list[bool], budget: int, start: int, expected: Window | None
) -> None:
    assert choose_window(costs, is_user, budget, start) == expected


def simulate(costs: list[tuple[int, int]], budget: int) -> tuple[list[int], int]:
    """A conversation growing exchange by exchange: (user cost, reply cost) pairs.

    Returns the window start used for each new message and the number of trims."""
    turn_costs: list[int] = []
    is_user: list[bool] = []
    start = 0
    starts: list[int] = []
    trims = 0
    for user_cost, reply_cost in costs:
        turn_costs.append(user_cost)
        is_user.append(True)
        window = choose_window(turn_costs, is_user, budget, start)
        assert window is not None
        assert sum(turn_costs[window.start :]) <= budget
        if window.start != start:
            trims += 1
        start = window.start
        starts.append(start)
        turn_costs.append(reply_cost)
        is_user.append(False)
    return starts, trims


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.integers(30, 70), st.integers(30, 70)), min_size=30, max_size=150),
)
def test_prefix_stays_stable_between_trims(costs: list[tuple[int, int]]) -> None:
    budget = 1000
    starts, trims = simulate(costs, budget)
    turns = 2 * len(costs)
    assert starts == sorted(starts)
    # the start changes rarely: after a trim the window has room for several more exchanges
    assert trims < turns / 3
    assert trims <= turns * 70 / (budget * TRIM_SLACK) + 1
    # between two trims the start is constant for a run of consecutive messages
    changes = [i for i in range(1, len(starts)) if starts[i] != starts[i - 1]]
    for a, b in itertools.pairwise(changes):
        assert b - a >= 2


def test_prefix_stability_long_conversation() -> None:
    rng = random.Random(7)
    costs = [(rng.randint(20, 80), rng.randint(20, 80)) for _ in range(1000)]
    starts, trims = simulate(costs, 1000)
    assert starts == sorted(starts)
    assert trims > 0
    # each trim leaves ~budget * slack = 333 tokens free, ~3 exchanges of ~100 tokens
    assert trims < len(costs) / 3
    assert trims > len(costs) / 10


def test_chat_messages_keeps_system_prompt_first() -> None:
    turns = [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "bye")]
    assert chat_messages("be nice", turns) == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    assert chat_messages("be nice", []) == [{"role": "system", "content": "be nice"}]


@given(st.lists(st.tuples(st.booleans(), st.text(max_size=20)), max_size=10), st.text())
def test_chat_messages_never_drops_system_prompt(
    spec: list[tuple[bool, str]], system_prompt: str
) -> None:
    turns = [Turn("user" if user else "assistant", text) for user, text in spec]
    messages = chat_messages(system_prompt, turns)
    assert messages[0] == {"role": "system", "content": system_prompt}
    assert [m["content"] for m in messages[1:]] == [t.text for t in turns]
    assert all(m["role"] != "system" for m in messages[1:])


@pytest.mark.parametrize(
    ("name", "text", "multi_user", "expected"),
    [
        ("alice", "hi", False, "hi"),
        ("alice", "hi", True, "alice: hi"),
        ("Bob Smith", "a: b", True, "Bob Smith: a: b"),
        ("Bob Smith", "a: b", False, "a: b"),
    ],
)
def test_speaker_text(name: str, text: str, multi_user: bool, expected: str) -> None:
    assert speaker_text(name, text, multi_user) == expected
