"""bot/history.py's `recall`: a prompt's history, notes and summary in one read, the same as
the reads one at a time, and nothing it was not asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.events import Incoming, Quoted
from bot.history import Recall, Recalled
from bot.store import Store

CHANNEL = "test:c"
SCOPE = "server:test:g"


async def one_by_one(store: Store, through_row: int, wanted: Recall) -> Recalled:
    """What `recall` is to give, read the slow way."""
    notes = await store.notes(*wanted.notes_of) if wanted.notes_of else []
    summary = await store.summary(CHANNEL) if wanted.summary else None
    unsummarized = wanted.summary and bool(await store.unsummarized([CHANNEL]))
    return Recalled(await store.history(CHANNEL, through_row), notes, summary, unsummarized)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "db.sqlite")
    yield store
    await store.close()


async def test_recall_reads_what_the_reads_one_at_a_time_read(store: Store) -> None:
    rows = []
    for i in range(6):
        author = "ann" if i % 2 else "bob"
        message = Incoming("test", "c", f"m{i}", author, author.title(), f"words {i}")
        if i == 5:  # a reply: its quote is read with it
            message = Incoming(
                "test", "c", "m5", "ann", "Ann", "words 5", reply_to_id="m4", server_id="g"
            )
        quoted = Quoted("m4", "bob", "Bob", "words 4") if i == 5 else None
        row = await store.accept(message, message.text, quoted)
        assert row is not None
        await store.complete(row, CHANNEL, f"answer {i}")
        rows.append(row)
    await store.accept(Incoming("test", "other", "x1", "ann", "Ann", "elsewhere"), "elsewhere")
    await store.add_note("test:ann", SCOPE, "likes tea", most=5)
    await store.add_note("test:ann", SCOPE, "lives by the sea", most=5)
    await store.add_note("test:ann", "channel:test:dm", "in the DM", most=5)
    await store.add_note("test:bob", SCOPE, "bob's own", most=5)
    everything = Recall(notes_of=("test:ann", SCOPE), summary=True)
    nothing_more = Recall()

    async def check(through_row: int, wanted: Recall) -> Recalled:
        recalled = await store.recall(CHANNEL, through_row, wanted)
        assert recalled == await one_by_one(store, through_row, wanted)
        return recalled

    # No window row yet: the whole history, no summary, nothing to summarize.
    got = await check(rows[5], everything)
    assert len(got.history) == 11 and got.history[-1].quote is not None
    assert [n.text for n in got.notes] == ["likes tea", "lives by the sea"]
    assert (got.summary, got.unsummarized) == (None, False)
    assert await check(rows[5], nothing_more) == Recalled(got.history)
    assert len((await check(rows[2], everything)).history) == 5  # through the row answered

    # Trimmed: two messages left the window and no summary covers them; then one does.
    await store.set_window_start(CHANNEL, rows[1])
    got = await check(rows[5], everything)
    assert got.history[0].row == rows[1] and got.unsummarized
    left = await store.trimmed(CHANNEL, 0, 10)
    assert await store.save_summary(CHANNEL, "gist", 3, None, left[:1])
    assert (await check(rows[5], everything)).unsummarized  # its answer is not covered yet
    assert await store.save_summary(CHANNEL, "gist two", 4, await store.summary(CHANNEL), left)
    got = await check(rows[5], everything)
    assert got.summary is not None and got.summary.text == "gist two"
    assert not got.unsummarized
    # The next trim drops two more: waiting again, until summarized ahead.
    await store.set_doomed(CHANNEL, rows[2])
    assert (await check(rows[5], everything)).unsummarized
    assert (await check(rows[5], Recall(summary=True))).notes == []
    assert await check(rows[5], Recall(notes_of=("test:bob", SCOPE))) == Recalled(
        got.history, await store.notes("test:bob", SCOPE)
    )
