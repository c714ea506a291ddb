"""bot/store.py: migrations, WAL, accept/complete exactly once, history windows, forgetting."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import warnings
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from bot.database import StoreError
from bot.events import Incoming, Quoted
from bot.history import StoredQuote
from bot.migrations import MIGRATIONS
from bot.store import RANDOM_SEED, ScopeSettings, Store
from bot.usage import ReplyUsage
from support.store_faults import fill_disk, free_disk, write_lock_held
from support.stored import everything_stored, message_count, schema_version


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


async def test_v1_rows_lose_their_copied_quotes(db_path: Path) -> None:
    """Before v2 a reply carried a copy of the quoted text, which could be words deleted or
    forgotten since: the copy goes, the reply's own text stays; a pending reply keeps its
    reference (from its saved Incoming), and that saved Incoming loses the copy too."""
    db_path.parent.mkdir(parents=True)
    copied = "(replying to:)\n> my PIN is 4417\n> \n> second line\n\nwhat PIN?\n\nsecond para"
    pending = json.dumps({**json.loads(incoming("m2").to_json()), "reply_to_id": "m0"})
    pending = pending.replace('"reply_to_id"', '"reply_to_text": "my PIN is 4417", "reply_to_id"')
    with closing(sqlite3.connect(db_path)) as raw:
        raw.executescript(f"{MIGRATIONS[0]}\nPRAGMA user_version = 1;")
        rows = [("m1", copied), ("m2", copied), ("m3", "(replying to:) is how I start")]
        for platform_id, text in rows:
            raw.execute(
                "INSERT INTO messages (channel, platform_message_id, author_id, author_name,"
                " role, text, created_at) VALUES ('console:c1', ?, 'console:bob', 'Bob',"
                " 'user', ?, 0)",
                (platform_id, text),
            )
        raw.execute("INSERT INTO pending VALUES (2, ?, 0)", (pending,))
        raw.commit()
    store = await Store.open(db_path)
    try:
        assert schema_version(db_path) == len(MIGRATIONS)
        assert await texts(store) == [
            "what PIN?\n\nsecond para",
            "what PIN?\n\nsecond para",
            "(replying to:) is how I start",
        ]
        assert await quotes(store) == [None, StoredQuote("m0"), None]
        (saved,) = await store.pending()
        assert saved.message.reply_to_id == "m0"
    finally:
        await store.close()
    assert "4417" not in everything_stored(db_path)


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


async def test_accept_and_complete_are_two_round_trips_each_to_the_connections_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every message takes both: each trip to aiosqlite's thread is a thread switch each way
    # (bench.overhead). One takes SQLite's lock, one does the rest.
    trips: list[object] = []
    execute = store._db._execute

    async def counted(fn: object, *args: object) -> object:
        trips.append(fn)
        return await execute(fn, *args)

    monkeypatch.setattr(store._db, "_execute", counted)
    usage = ReplyUsage(evaluated_tokens=5, reused_tokens=1, generated_tokens=3, model_s=0.5)
    quoting = replace(incoming("m2", text="and?"), reply_to_id="m0")
    row = await store.accept(quoting, "and?", Quoted("bob", "Bob", "earlier"))
    assert row is not None and len(trips) == 2
    assert await store.complete(row, "console:c1", "yes", usage, joined=[row + 7]) is True
    assert len(trips) == 4
    monkeypatch.undo()
    assert await texts(store) == ["and?", "yes"]
    assert await store.pending() == []


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
    await store.accept(incoming("m1", platform="discord"), "same id on another platform")

    # Only its author's edit applies: the channels whose prompts change, or none.
    assert await store.edit_message("console", "m1", "console:mallory", "forged") == []
    assert await store.edit_message("console", "m1", "console:alice", "fixed") == ["console:c1"]
    assert await texts(store) == ["fixed"]
    assert await texts(store, "discord:c1") == ["same id on another platform"]
    assert await store.edit_message("console", "missing", "console:alice", "x") == []

    assert await store.delete_message("console", "m1") == ["console:c1"]
    assert await texts(store) == []
    assert row not in [p.row for p in await store.pending()]  # its pending row cascades
    assert await store.delete_message("console", "m1") == []
    assert await texts(store, "discord:c1") == ["same id on another platform"]


async def test_a_message_is_found_by_its_id_in_any_channel_of_its_platform(store: Store) -> None:
    # A Matrix redaction or edit names the event and its room; the row may be in a thread.
    await store.accept(incoming("$e", channel="!room|$root", platform="matrix"), "threaded")
    edited = await store.edit_message("matrix", "$e", "matrix:alice", "edited")
    assert edited == ["matrix:!room|$root"]
    assert await texts(store, "matrix:!room|$root") == ["edited"]
    assert await store.delete_message("matrix", "$e") == ["matrix:!room|$root"]
    assert await texts(store, "matrix:!room|$root") == []


def reply(message_id: str, to: str, **kw: str) -> Incoming:
    return replace(incoming(message_id, **kw), reply_to_id=to)


async def quotes(store: Store, channel: str = "console:c1") -> list[StoredQuote | None]:
    return [m.quote for m in await store.history(channel)]


async def test_a_reply_keeps_a_reference_to_what_it_quotes(store: Store) -> None:
    quoted = await store.accept(incoming("m1", text="the code is 42"), "the code is 42")
    assert quoted is not None
    await store.complete(quoted, "console:c1", "an answer")
    await store.accept(reply("m2", "m1", author="bob"), "what code?")
    # The bot's own answer is stored without a platform id: found by the text quoted.
    on_platform = Quoted("bot-id", "hearthbot", "an answer")
    await store.accept(reply("m3", "p9", author="bob"), "why?", on_platform)
    # A message never stored: only its id, and whose it is (from what the adapter read).
    await store.accept(reply("m4", "p7", author="bob"), "who?", Quoted("carol", "Carol", "x"))
    assert await quotes(store) == [
        None,
        None,
        StoredQuote("m1", quoted, "Alice", "the code is 42"),
        StoredQuote("p9", quoted + 1, "hearthbot", "an answer"),
        StoredQuote("p7"),
    ]
    # A quoted row that goes takes the reference with it; so does a deletion of an unstored
    # one, and `!forget` of its author.
    await store.delete_message("console", "m1")
    assert (await quotes(store))[1:] == [
        None,
        StoredQuote("p9", quoted + 1, "hearthbot", "an answer"),
        StoredQuote("p7"),
    ]
    assert await store.forget_user("console:carol") == 0
    assert (await quotes(store))[-1] is None
    await store.accept(reply("m5", "p8", author="bob"), "and?")
    assert await store.delete_message("console", "p8") == ["console:c1"]  # its reply's
    assert (await quotes(store))[-1] is None


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


# -- the write path ----------------------------------------------------------------------------


class Aborted(Exception):
    """Ends a transaction in a test: what it wrote must be rolled back."""


async def test_a_write_never_lands_in_another_coroutines_transaction(store: Store) -> None:
    # One connection: a one-statement write sent while another coroutine's transaction is
    # open would run inside it and be rolled back with it.
    row = await store.accept(incoming("m1"), "hello")
    assert row is not None
    writes: list[asyncio.Task[object]] = []
    with pytest.raises(Aborted):
        async with store.transaction() as db:
            await db.execute("DELETE FROM pending WHERE message_row = ?", (row,))
            writes.append(asyncio.create_task(store.update_scope("global", persona="goofy")))
            writes.append(
                asyncio.create_task(store.edit_message("console", "m1", "console:alice", "edited"))
            )
            await asyncio.sleep(0)  # the writes go as far as they can...
            await db.execute("SELECT 1")  # ...and what they sent SQLite has run by now
            raise Aborted
    await asyncio.gather(*writes)
    assert await store.scope_settings(["global"]) == [ScopeSettings(persona="goofy")]
    assert await texts(store) == ["edited"]
    assert [p.row for p in await store.pending()] == [row]  # the aborted delete was undone


async def test_a_full_disk_fails_writes_as_store_errors_until_there_is_room(
    store: Store, db_path: Path
) -> None:
    row = await store.accept(incoming("m1"), "question")
    assert row is not None
    await fill_disk(store._db)
    with pytest.raises(StoreError, match="database or disk is full"):
        await store.complete(row, "console:c1", "an answer")
    with pytest.raises(StoreError, match="database or disk is full"):
        await store.accept(incoming("m2"), "another question")
    assert store.problem == "database or disk is full"
    assert [p.row for p in await store.pending()] == [row]  # nothing half-written
    await free_disk(store._db)
    assert await store.complete(row, "console:c1", "an answer") is True
    assert store.problem is None
    assert await texts(store) == ["question", "an answer"]


async def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_no_transaction_open(
    store: Store, db_path: Path
) -> None:
    with write_lock_held(db_path):
        waiting = asyncio.create_task(store.accept(incoming("m1"), "first"))
        await asyncio.sleep(0)  # its BEGIN IMMEDIATE now waits in SQLite for the lock
        waiting.cancel()  # e.g. shutting down
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await store.accept(incoming("m2"), "second") is not None
    assert message_count(db_path) == 1  # committed (another connection sees it); "first" not


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
