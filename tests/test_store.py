"""bot/store.py: migrations, WAL, accept/complete exactly once, history windows, forgetting."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.events import Incoming
from bot.store import MIGRATIONS, RANDOM_SEED, ScopeSettings, Store
from support.stored import message_count, schema_version


def incoming(
    message_id: str,
    *,
    channel: str = "c1",
    author: str = "alice",
    text: str = "hello",
    platform: str = "console",
) -> Incoming:
    return Incoming(
        platform=platform,
        channel_id=channel,
        message_id=message_id,
        author_id=author,
        author_name=author.title(),
        text=text,
        received_at=1_700_000_000.0,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "hearthbot.db"  # the parent does not exist yet


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    try:
        yield opened
    finally:
        await opened.close()


async def texts(store: Store, channel: str = "console:c1", through: int | None = None) -> list[str]:
    return [m.text for m in await store.history(channel, through_row=through)]


# -- schema ------------------------------------------------------------------------------------


async def test_migrations_set_user_version_and_reopen_is_idempotent(db_path: Path) -> None:
    first = await Store.open(db_path)
    assert schema_version(db_path) == len(MIGRATIONS)
    row = await first.accept(incoming("m1"), "hello")
    await first.close()

    again = await Store.open(db_path)  # must not re-run CREATE TABLE
    try:
        assert schema_version(db_path) == len(MIGRATIONS)
        assert [m.row for m in await again.history("console:c1")] == [row]
    finally:
        await again.close()


async def test_newer_schema_than_known_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="newer"):
            await Store.open(db_path)
        gc.collect()
    # the failed open closed its connection (aiosqlite warns when one is garbage collected open)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_wal_mode_is_on(store: Store, db_path: Path) -> None:
    async with store._db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"
    with sqlite3.connect(db_path) as raw:  # persistent: another connection sees it too
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- accept / complete -------------------------------------------------------------------------


async def test_accept_stores_message_and_pending_row(store: Store) -> None:
    message = incoming("m1", text="raw text")
    row = await store.accept(message, "stored text")
    assert isinstance(row, int)

    [stored] = await store.history("console:c1")
    assert (stored.row, stored.role, stored.author_id, stored.author_name, stored.text) == (
        row,
        "user",
        "console:alice",
        "Alice",
        "stored text",
    )
    [pending] = await store.pending()
    assert pending.row == row
    assert pending.message == message


async def test_same_platform_message_twice_is_accepted_once(store: Store, db_path: Path) -> None:
    assert await store.accept(incoming("m1"), "hello") is not None
    assert await store.accept(incoming("m1"), "hello") is None
    assert len(await store.pending()) == 1
    assert message_count(db_path) == 1
    # the same id in another channel is another message
    assert await store.accept(incoming("m1", channel="c2"), "hello") is not None


async def test_concurrent_accepts_do_not_collide(store: Store) -> None:
    # Adapters deliver messages from separate tasks; transactions on the one connection
    # must not interleave ("cannot start a transaction within a transaction").
    rows = await asyncio.gather(*(store.accept(incoming(f"m{i}"), "hi") for i in range(10)))
    assert sorted(rows) == list(range(1, 11))
    assert len(await store.pending()) == 10


async def test_complete_stores_answer_and_clears_pending(store: Store) -> None:
    row = await store.accept(incoming("m1"), "question")
    assert row is not None
    assert await store.complete(row, "console:c1", "answer") is True

    assert await store.pending() == []
    history = await store.history("console:c1")
    assert [(m.role, m.author_id, m.text) for m in history] == [
        ("user", "console:alice", "question"),
        ("assistant", "bot", "answer"),
    ]
    # answering twice is refused: the pending mark is gone
    assert await store.complete(row, "console:c1", "again") is False
    assert await texts(store) == ["question", "answer"]


async def test_complete_with_empty_reply_clears_pending_without_a_turn(store: Store) -> None:
    row = await store.accept(incoming("m1"), "question")
    assert row is not None
    assert await store.complete(row, "console:c1", "") is True
    assert await store.pending() == []
    assert await texts(store) == ["question"]


async def test_complete_after_forget_user_is_refused_and_stores_nothing(
    store: Store, db_path: Path
) -> None:
    row = await store.accept(incoming("m1"), "question")
    assert row is not None
    assert await store.forget_user("console:alice") == 1
    assert await store.complete(row, "console:c1", "answer") is False
    assert message_count(db_path) == 0


async def test_pending_round_trips_every_incoming_field(store: Store) -> None:
    message = Incoming(
        platform="discord",
        channel_id="123",
        message_id="456",
        author_id="789",
        author_name="Zoë 🐱",
        text="hi @bot",
        is_direct=True,
        reply_to_id="455",
        server_id="42",
        is_admin=True,
        received_at=1_700_000_123.25,
    )
    row = await store.accept(message, "hi")
    [pending] = await store.pending()
    assert pending.row == row
    assert pending.message == message
    assert pending.created_at > 0


def test_pending_saved_by_an_older_version_still_loads() -> None:
    # Fields an older hearthbot stored (e.g. mentions_bot) must not keep a message unanswered.
    raw = incoming("m1").to_json().replace('"is_direct"', '"mentions_bot": true, "is_direct"')
    assert "mentions_bot" in raw
    assert Incoming.from_json(raw) == incoming("m1")


# -- history -----------------------------------------------------------------------------------


async def test_history_is_oldest_first_and_ends_at_through_row(store: Store) -> None:
    rows = []
    for i in range(4):
        row = await store.accept(incoming(f"m{i}", text=f"t{i}"), f"t{i}")
        assert row is not None
        rows.append(row)
    await store.accept(incoming("x", channel="other"), "elsewhere")

    assert await texts(store) == ["t0", "t1", "t2", "t3"]
    # through_row is the message being answered: it is included, later ones are not
    assert await texts(store, through=rows[1]) == ["t0", "t1"]
    assert await texts(store, through=rows[0] - 1) == []
    assert await texts(store, "console:other") == ["elsewhere"]
    assert await texts(store, "console:nowhere") == []


async def test_set_window_start_hides_older_messages(store: Store, db_path: Path) -> None:
    rows = [await store.accept(incoming(f"m{i}", text=f"t{i}"), f"t{i}") for i in range(4)]
    await store.set_window_start("console:c1", rows[2])
    assert await texts(store) == ["t2", "t3"]
    await store.set_window_start("console:c1", rows[3])  # moves forward (upsert)
    assert await texts(store) == ["t3"]
    assert message_count(db_path, "console:c1") == 4  # hidden, not deleted


async def test_reset_channel_deletes_history_but_keeps_pending(store: Store) -> None:
    done = await store.accept(incoming("m1", text="old"), "old")
    assert done is not None
    await store.complete(done, "console:c1", "old answer")
    waiting = await store.accept(incoming("m2", text="waiting"), "waiting")
    await store.accept(incoming("m3", channel="c2"), "other channel")
    await store.set_window_start("console:c1", done + 1)

    assert await store.reset_channel("console:c1") == 2
    # the pending message stays and is visible again (the window was reset too)
    assert [m.row for m in await store.history("console:c1")] == [waiting]
    c1_pending = [p.row for p in await store.pending() if p.message.channel_id == "c1"]
    assert c1_pending == [waiting]
    assert await texts(store, "console:c2") == ["other channel"]


async def test_forget_user_everywhere_and_cascades_pending(store: Store) -> None:
    answered = await store.accept(incoming("a1", channel="c1"), "alice one")
    assert answered is not None
    await store.complete(answered, "console:c1", "reply to alice")
    await store.accept(incoming("a2", channel="c2"), "alice two")  # still pending
    bob = await store.accept(incoming("b1", channel="c1", author="bob"), "bob")

    assert await store.channels_of("console:alice") == ["console:c1", "console:c2"]
    assert await store.channels_of("console:bob") == ["console:c1"]
    assert await store.forget_user("console:alice") == 2
    assert await store.channels_of("console:alice") == []
    assert await texts(store, "console:c1") == ["reply to alice", "bob"]
    assert await texts(store, "console:c2") == []
    assert [p.row for p in await store.pending()] == [bob]


async def test_edit_and_delete_by_platform_id(store: Store) -> None:
    row = await store.accept(incoming("m1", text="typo"), "typo")
    await store.accept(incoming("m1", channel="c2"), "same id elsewhere")

    assert await store.edit_message("console:c1", "m1", "fixed") is True
    assert await texts(store) == ["fixed"]
    assert await texts(store, "console:c2") == ["same id elsewhere"]
    assert await store.edit_message("console:c1", "missing", "x") is False

    assert await store.delete_message("console:c1", "m1") is True
    assert await texts(store) == []
    assert row not in [p.row for p in await store.pending()]  # its pending row cascades
    assert await store.delete_message("console:c1", "m1") is False
    assert await texts(store, "console:c2") == ["same id elsewhere"]


# -- scope settings ----------------------------------------------------------------------------


async def test_scope_settings_missing_scopes_are_empty(store: Store) -> None:
    assert await store.scope_settings(["global", "channel:x"]) == [ScopeSettings()] * 2


async def test_update_scope_upserts_and_clears(store: Store) -> None:
    scopes = ["global", "server:discord:1", "channel:discord:2"]
    await store.update_scope("server:discord:1", persona="coder")
    await store.update_scope("server:discord:1", temperature=0.3)  # keeps persona
    await store.update_scope("channel:discord:2", seed=RANDOM_SEED)
    assert await store.scope_settings(scopes) == [
        ScopeSettings(),
        ScopeSettings(persona="coder", temperature=0.3),
        ScopeSettings(seed=-1),
    ]
    await store.update_scope("server:discord:1", persona=None)
    [server] = await store.scope_settings(["server:discord:1"])
    assert server == ScopeSettings(temperature=0.3)


@pytest.mark.parametrize("changes", [{}, {"colour": "red"}, {"persona": "x", "nope": 1}])
async def test_update_scope_rejects_unknown_columns(store: Store, changes: dict) -> None:
    with pytest.raises(ValueError):
        await store.update_scope("global", **changes)


# -- restart -----------------------------------------------------------------------------------


async def test_restart_forgets_nothing(db_path: Path) -> None:
    first = await Store.open(db_path)
    answered = await first.accept(incoming("m1", text="q1"), "q1")
    assert answered is not None
    await first.complete(answered, "console:c1", "a1")
    message = incoming("m2", text="q2")
    waiting = await first.accept(message, "q2")
    await first.set_window_start("console:c1", answered + 1)
    await first.update_scope("channel:console:c1", persona="goofy", temperature=1.5, seed=7)
    await first.close()

    second = await Store.open(db_path)
    try:
        assert await texts(second) == ["a1", "q2"]
        assert message_count(db_path) == 3
        [pending] = await second.pending()
        assert (pending.row, pending.message) == (waiting, message)
        assert await second.scope_settings(["channel:console:c1"]) == [
            ScopeSettings("goofy", 1.5, 7)
        ]
        # the restored pending message can still be answered exactly once
        assert await second.complete(waiting, "console:c1", "a2") is True
        assert await second.accept(message, "q2") is None
    finally:
        await second.close()
