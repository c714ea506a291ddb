"""An image's KV cells in a sequence's token list (bot/model/llama_cpp/projector.py): the pool's
prefix comparison knows a picture again by its content hash, and a reusable prefix never ends
inside an image."""

from __future__ import annotations

import hashlib

import pytest

from bot.model.llama_cpp.kv_cache import common_prefix
from bot.model.llama_cpp.projector import image_cells, whole_images

RED = hashlib.sha256(b"red").hexdigest()
BLUE = hashlib.sha256(b"blue").hexdigest()


def turn(*parts: list[int] | str, n: int = 4) -> list[int]:
    cells: list[int] = []
    for part in parts:
        cells += image_cells(part, n) if isinstance(part, str) else part
    return cells


def test_cells_are_negative_and_name_the_picture() -> None:
    red = image_cells(RED, 3)
    assert len(red) == 3 and max(red) < 0
    assert red[0] != red[1] == red[2]  # the first cell marks where the picture starts
    assert image_cells(RED, 3) == red and not set(image_cells(BLUE, 3)) & set(red)
    assert image_cells("0" * 64, 2) == [-3, -2]  # never 0 or positive: token ids


@pytest.mark.parametrize(
    ("cached", "new", "reused"),
    [
        # The same picture in the history: the whole turn is reused, and the next one's text.
        (turn([1, 2], RED, [3]), turn([1, 2], RED, [3, 7, 8]), 7),
        # Another picture at the same place: reuse stops where it starts.
        (turn([1, 2], RED, [3]), turn([1, 2], BLUE, [3]), 2),
        # Text where the cache had a picture, and the other way round.
        (turn([1, 2], RED), turn([1, 2, 5, 5, 5, 5]), 2),
        (turn([1, 2, 5]), turn([1, 2], RED), 2),
        # The cache was trimmed inside the picture: not from its middle, from its start.
        (turn([1, 2], RED)[:4], turn([1, 2], RED, [3]), 2),
        # Two pictures in a row, the second differs.
        (turn([1], RED, BLUE, [2]), turn([1], RED, RED, [2]), 5),
        # The same picture twice, the cache trimmed inside the second: back to its start.
        (turn([1], RED, RED)[:7], turn([1], RED, RED, [2]), 5),
    ],
)
def test_reuse_with_pictures(cached: list[int], new: list[int], reused: int) -> None:
    assert whole_images(new, common_prefix(cached, new)) == reused


def test_a_prefix_outside_any_picture_is_kept() -> None:
    cells = turn([1, 2], RED, [3])
    assert [whole_images(cells, p) for p in range(len(cells) + 1)] == [0, 1, 2, 2, 2, 2, 6, 7]
