"""Which pictures a prompt shows ([images] max_images_in_context, newest first) and how the
others are named in their turn's text: plain functions, as tables."""

from __future__ import annotations

import pytest

from bot.prompt.pictures import shown_counts, with_placeholders
from bot.settings import ImageSettings


@pytest.mark.parametrize(
    ("counts", "most", "shown"),
    [
        ([], 2, []),
        ([0, 0, 0], 2, [0, 0, 0]),
        ([1, 0, 1, 0, 1], 2, [0, 0, 1, 0, 1]),  # the newest two
        ([1, 1, 1], 0, [0, 0, 0]),  # the model cannot see: none
        ([3], 2, [2]),  # one message's first two
        ([2, 0, 3], 4, [1, 0, 3]),  # the newest message whole, then the one before
        ([1, 2], 10, [1, 2]),  # fewer than the cap: all
        ([1, 1], -1, [0, 0]),
    ],
)
def test_the_newest_pictures_are_shown(counts: list[int], most: int, shown: list[int]) -> None:
    assert shown_counts(counts, most) == shown


@pytest.mark.parametrize(
    ("text", "names", "result"),
    [
        ("what is this?", [], "what is this?"),
        ("what is this?", ["photo.jpg"], "what is this?\n[image: photo.jpg]"),
        ("", ["photo.jpg"], "[image: photo.jpg]"),  # a picture posted alone
        # Adapters name a picture in its text already: not twice.
        ("look\n\n[image: photo.jpg]", ["photo.jpg"], "look\n\n[image: photo.jpg]"),
        ("[image: a.png]", ["a.png", "b.png"], "[image: a.png]\n[image: b.png]"),
        ("x", ["a.png", "a.png"], "x\n[image: a.png]"),
    ],
)
def test_a_picture_not_shown_is_named(text: str, names: list[str], result: str) -> None:
    assert with_placeholders(text, names) == result


def test_the_default_cap_is_small() -> None:
    assert ImageSettings().max_images_in_context == 2
