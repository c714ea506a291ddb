"""Matrix content that always fits an event: Markdown that would render to far more HTML than
text, and answers whose JSON is far longer than their characters, still arrive (through a
MatrixReply and a stand-in Outbox that refuses what a homeserver refuses: over 64 KiB)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.matrix.format import (
    CONTENT_MAX_BYTES,
    MAX_TABLE_CELLS,
    edit_content,
    event_bytes,
    event_parts,
    message_content,
    render_html,
    table_cells_at_most,
)
from adapters.matrix.outbox import MAX_MESSAGE_LENGTH
from adapters.matrix.reply import MatrixReply
from support.matrix_reply import (
    RecordingOutbox,
    encrypted_event_bytes,
    incoming,
    padded_table,
)
from support.measure import LoopLag


def unsplit(parts: list[str]) -> str:
    """The parts' text without the fences a split closes and reopens, and without spaces."""
    joined = "".join(parts).replace("```py\n", "").replace("\n```", "")
    return "".join(joined.split())


@pytest.mark.parametrize(
    ("text", "cells"),
    [
        ("no table | here", 0),
        # Columns times rows (the header, then the body).
        ("| a | b |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |", 2 * 3),
        ("a | b\n--- | ---\n1 | 2", 2 * 2),
        # A table ends at a blank line; each table counts on its own.
        ("|a|b|c|\n|-|-|-|\n|1|\n\nafter\n\n|a|\n|-|\n|1|", 3 * 2 + 1 * 2),
        ("- a list\n- not a table\n---", 0),
        (padded_table(600), 600 * (1 + padded_table(600).count("|x\n"))),
    ],
)
def test_table_cells_at_most(text: str, cells: int) -> None:
    assert table_cells_at_most(text) == cells


def test_a_table_that_is_mostly_padding_stays_text() -> None:
    small = "| name | n |\n|---|--:|\n| apples | 3 |"
    assert render_html(small).startswith("<table>")
    blown = padded_table(600)
    assert table_cells_at_most(blown) > MAX_TABLE_CELLS
    html = render_html(blown)
    assert "<table>" not in html and len(html) < 3 * len(blown)  # it was 669 KB


@pytest.mark.parametrize(
    "text",
    [
        "word " * 800,
        "漢" * 4000,
        "😀" * 4000,
        "\x01" * 4000,
        "```py\n" + "x = '😀'\n" * 500 + "```",
    ],
)
def test_every_part_fits_an_event_even_as_an_edit(text: str) -> None:
    parts = event_parts(text, MAX_MESSAGE_LENGTH)
    assert unsplit(parts) == unsplit([text])
    for part in parts:
        assert len(part) <= MAX_MESSAGE_LENGTH
        for content in (message_content(part, reply_to="$q"), edit_content("$" + "e" * 43, part)):
            assert event_bytes(content) <= CONTENT_MAX_BYTES
            assert encrypted_event_bytes(content) <= 65_536


def test_html_is_left_out_when_it_would_not_fit() -> None:
    text = "漢" * 2500  # 15 KB as escaped JSON: twice fits, three times does not
    assert message_content(text)["formatted_body"] == text
    edit = edit_content("$e", text)
    assert "formatted_body" not in edit["m.new_content"]
    assert edit["m.new_content"]["body"] == text and event_bytes(edit) <= CONTENT_MAX_BYTES


@pytest.mark.parametrize("answer", [padded_table(600), "😀" * 4000, "漢" * 9000])
async def test_an_answer_that_would_blow_up_still_arrives(answer: str) -> None:
    outbox = RecordingOutbox(interval=0.01, max_length=MAX_MESSAGE_LENGTH)
    reply = MatrixReply(outbox, incoming())  # type: ignore[arg-type]
    async with LoopLag() as lag:
        await reply.update(answer[:2000])
        await asyncio.sleep(0.05)
        await reply.update(answer)
        await reply.finish(answer)
        await asyncio.wait_for(reply.done.wait(), 30)
    assert outbox.too_large == []
    first, *rest = outbox.sent
    shown = [c["m.new_content"]["body"] for c in rest if "m.new_content" in c]
    follow_ups = [c["body"] for c in rest if "m.new_content" not in c]
    assert "".join([shown[-1] if shown else first["body"], *follow_ups]) == answer
    assert lag.worst <= 0.1, f"the event loop was held {lag.worst:.3f} s"
