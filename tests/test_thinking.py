"""<think> blocks are split off while streaming, whatever the chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.prompt.thinking import ThinkFilter, with_thinking


def run(chunks: list[str]) -> tuple[str, str, str]:
    f = ThinkFilter()
    shown = "".join(f.feed(c) for c in chunks) + f.flush()
    return shown, f.answer, f.thinking


@pytest.mark.parametrize(
    ("chunks", "answer", "thinking"),
    [
        (["plain answer"], "plain answer", ""),
        (["<think>hmm</think>Hello"], "Hello", "hmm"),
        (["<thi", "nk>secret plan</th", "ink>The answer"], "The answer", "secret plan"),
        (["<", "t", "h", "i", "n", "k", ">x", "<", "/think>", "y"], "y", "x"),
        (["a < b and c <thin"], "a < b and c <thin", ""),  # a dangling partial tag is text
        (["<think>never closed"], "", "never closed"),
        (["one<think>a</think>two<think>b</think>three"], "onetwothree", "ab"),
    ],
)
def test_think_filter(chunks: list[str], answer: str, thinking: str) -> None:
    shown, got_answer, got_thinking = run(chunks)
    assert (got_answer, got_thinking) == (answer, thinking)
    assert shown == answer  # what was streamed is exactly the answer: no thinking leaked


@given(
    st.text(alphabet="ab<>/thinkx ", max_size=40),
    st.text(alphabet="abc ", max_size=40),
    st.lists(st.integers(1, 7), max_size=30),
)
def test_any_chunking_gives_the_same_split(thought: str, answer: str, cuts: list[int]) -> None:
    thought = thought.replace("<think>", "").replace("</think>", "")
    text = f"<think>{thought}</think>{answer}"
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(text[at : at + cut])
        at += cut
    chunks.append(text[at:])
    shown, got_answer, got_thinking = run(chunks)
    assert got_answer == answer and shown == answer
    assert "</think>" not in got_thinking


def test_with_thinking_quotes_it_above_the_answer() -> None:
    assert with_thinking("Hi", "") == "Hi"
    assert with_thinking("Hi", "step 1\nstep 2") == "💭 thinking:\n> step 1\n> step 2\n\nHi"
