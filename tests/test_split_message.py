"""adapters.common.split: long answers split into platform-sized messages, code kept whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.common.split import FENCE, fence_state, split_message


def is_fence_line(line: str) -> bool:
    return line.strip().startswith(FENCE)


def fence_lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if is_fence_line(line)]


def content(text: str) -> str:
    """The non-whitespace characters outside fence lines (what a split must not lose)."""
    kept = [line for line in text.split("\n") if not is_fence_line(line)]
    return "".join("".join(kept).split())


def check_chunks(text: str, chunks: list[str], limit: int) -> None:
    """The invariants every split must keep."""
    for chunk in chunks:
        assert 0 < len(chunk) <= limit, chunk
        assert chunk.strip(), chunk
        assert len(fence_lines(chunk)) % 2 == 0, chunk
        assert fence_state(chunk) is None, chunk
    assert "".join(content(chunk) for chunk in chunks) == content(text)


# ---------------------------------------------------------------- fence_state


@pytest.mark.parametrize(
    ("text", "state", "expected"),
    [
        ("plain text", None, None),
        ("```python\nx = 1", None, "python"),
        ("```\nx = 1", None, ""),
        ("```python\nx = 1\n```", None, None),
        ("  ```js  \ncode", None, "js"),
        ("x = 1\n```\nafter", "python", None),  # a block open before the text closes
        ("more code", "python", "python"),
        ("```" + "x" * 30 + "\ncode", None, "x" * 20),  # the tag is capped
        ("say ```python inline", None, None),  # not at a line start: not a fence
    ],
)
def test_fence_state(text: str, state: str | None, expected: str | None) -> None:
    assert fence_state(text, state) == expected


# ---------------------------------------------------------------- split_message table


def paragraphs(n: int, size: int) -> list[str]:
    words = [f"word{i}" for i in range(size // 6)]
    return [f"P{p} " + " ".join(words) + "." for p in range(n)]


def test_short_text_is_unchanged() -> None:
    text = "Hello!\n\n```python\nprint('hi')\n```"
    assert split_message(text, 2000) == [text]
    assert split_message("x" * 40, 40) == ["x" * 40]


def test_empty_or_blank_text_gives_no_chunks() -> None:
    assert split_message("", 2000) == []
    assert split_message("  \n\n ", 2000) == []


def test_paragraphs_split_at_paragraph_boundaries() -> None:
    paras = paragraphs(20, 300)
    text = "\n\n".join(paras)
    chunks = split_message(text, 2000)
    assert len(chunks) > 1
    check_chunks(text, chunks, 2000)
    for chunk in chunks:
        # every chunk is whole paragraphs: no paragraph cut in the middle
        assert all(part in paras for part in chunk.strip().split("\n\n")), chunk
    assert [p for c in chunks for p in c.strip().split("\n\n")] == paras


def test_lines_are_preferred_to_sentences_and_words() -> None:
    lines = [f"line {i} has a few words. And a second sentence." for i in range(60)]
    text = "\n".join(lines)
    chunks = split_message(text, 400)
    check_chunks(text, chunks, 400)
    for chunk in chunks:
        assert all(line in lines for line in chunk.strip().split("\n")), chunk


def test_long_code_block_is_closed_and_reopened() -> None:
    code = "\n".join(f"value_{i} = compute({i}) + offset  # step {i}" for i in range(120))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nThat's all."
    chunks = split_message(text, 2000)
    assert len(chunks) >= 3
    check_chunks(text, chunks, 2000)
    for chunk in chunks:
        assert len(fence_lines(chunk)) % 2 == 0
        assert chunk.endswith(FENCE) or chunk is chunks[-1]
    assert chunks[0].startswith("Here is the script:")
    for chunk in chunks[1:]:
        assert chunk.startswith("```python\n"), chunk[:40]
    assert chunks[-1].endswith("That's all.")
    # the code lines survive whole and in order (the split is at line boundaries)
    code_lines = [
        line for chunk in chunks for line in chunk.split("\n") if line.startswith("value_")
    ]
    assert code_lines == code.split("\n")


def test_text_without_spaces_is_cut_hard() -> None:
    text = "abcdefghij" * 50
    chunks = split_message(text, 100)
    assert "".join(chunks) == text
    assert len(chunks) == 6  # hard cuts keep room for a closing fence: 96 characters each
    assert all(90 <= len(chunk) <= 100 for chunk in chunks[:-1])


def test_long_language_tag_still_fits() -> None:
    tag = "l" * 30
    text = f"```{tag}\n" + "\n".join(f"x{i}" for i in range(50)) + "\n```"
    chunks = split_message(text, 40)
    check_chunks(text, chunks, 40)
    assert all(chunk.startswith("```" + "l" * 20) for chunk in chunks[1:])


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        # the fence line straddles the cut: cutting at the space in the tag made "title" code
        ("Run this:\n```shell session with a long title\n$ make\n$ make install\n```\nDone.", 48),
        # a hard cut inside a long tag made its tail a line of code
        ("000\n\n\n\n  ```" + "x" * 25 + "\n\n  ```\n0", 40),
    ],
    ids=["space-in-tag", "hard-cut-in-tag"],
)
def test_fence_line_is_never_cut(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    check_chunks(text, chunks, limit)


@pytest.mark.parametrize("limit", [-1, 0, 1, 20, 39])
def test_small_limits_are_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 40"):
        split_message("hello", limit)


def test_limit_40_is_accepted() -> None:
    assert split_message("hello", 40) == ["hello"]


# ---------------------------------------------------------------- properties

words = st.text("abcdefghijklmnopqrstuvwxyz.,:;!?()'\"#=+-_0123456789", min_size=1, max_size=12)
long_words = st.text("abcdefghij", min_size=30, max_size=200)
separators = st.sampled_from([" ", " ", " ", "\n", "\n\n", "  ", ". ", "\t"])
languages = st.sampled_from(["", "python", "js", "c++", "shell session", "x" * 25])


@st.composite
def prose(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(words | long_words, separators), min_size=1, max_size=60))
    return "".join(word + sep for word, sep in parts)


@st.composite
def code_block(draw: st.DrawFn) -> str:
    language = draw(languages)
    indent = draw(st.sampled_from(["", "  "]))
    lines = draw(st.lists(st.text("abcxyz (){}=+;. ", max_size=80), max_size=30))
    return f"{indent}```{language}\n" + "\n".join(lines) + f"\n{indent}```"


@st.composite
def markdown(draw: st.DrawFn) -> str:
    blocks = draw(st.lists(prose() | code_block(), min_size=1, max_size=8))
    joins = draw(st.lists(st.sampled_from(["\n", "\n\n", "\n\n\n"]), min_size=len(blocks)))
    return "".join(block + join for block, join in zip(blocks, joins, strict=False)).rstrip()


@settings(max_examples=200)
@given(markdown(), st.integers(40, 500))
def test_split_keeps_limits_fences_and_content(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    check_chunks(text, chunks, limit)
    if text.strip() and len(text) <= limit:
        assert chunks == [text]


@settings(max_examples=200)
@given(st.text(max_size=600), st.integers(40, 300))
def test_split_arbitrary_text_never_exceeds_limit(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    assert all(0 < len(chunk) <= limit and chunk.strip() for chunk in chunks)
    if fence_state(text) is None and "`" not in text:
        assert "".join(c for chunk in chunks for c in chunk if not c.isspace()) == "".join(
            text.split()
        )
