"""What the bot keeps on disk stays private: the data directory is 0700 and the database files
0600 whatever the umask, and deleted text (!forget, retention, a redaction, an edit) leaves no
byte behind in any file, the -wal file included."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bot.events import Incoming
from bot.private_files import private_dir, private_file
from bot.store import Store
from support.daemons import ask, daemon_for

# Long enough to spill into an overflow page, so freed overflow pages are searched too.
SECRET = "my bank pin is 7294-wombat-quartz"
LONG_SECRET = SECRET + " " + "x" * 6000


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_holding(folder: Path, text: str) -> list[str]:
    """Every file under `folder` whose bytes contain `text` (as UTF-8)."""
    needle = text.encode()
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


# -- the helpers, as a table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, 0o700),  # created
        (0o755, 0o700),  # made by `make run` under umask 022, or a Dockerfile's mkdir
        (0o777, 0o700),
        (0o700, 0o700),
        (0o500, 0o500),  # only bits are taken away: a read-only folder stays read-only
    ],
)
def test_private_dir(tmp_path: Path, umask: int, existing: int | None, expected: int) -> None:
    folder = tmp_path / "parent" / "data"
    if existing is not None:
        folder.mkdir(parents=True)
        folder.chmod(existing)
    assert private_dir(folder) == folder
    assert mode(folder) == expected


@pytest.mark.parametrize(
    ("existing", "expected"),
    [(None, 0o600), (0o644, 0o600), (0o666, 0o600), (0o600, 0o600), (0o400, 0o400)],
)
def test_private_file(tmp_path: Path, umask: int, existing: int | None, expected: int) -> None:
    path = tmp_path / "hearthbot.db"
    if existing is not None:
        path.write_bytes(b"kept")
        path.chmod(existing)
    private_file(path)
    assert mode(path) == expected
    assert path.read_bytes() == (b"kept" if existing is not None else b"")


# -- the store's files -------------------------------------------------------------------------


def incoming(message_id: str, text: str, author: str = "alice") -> Incoming:
    return Incoming(
        platform="console",
        channel_id="c1",
        message_id=message_id,
        author_id=author,
        author_name=author.title(),
        text=text,
        received_at=1_700_000_000.0,
    )


async def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "data"
    store = await Store.open(data / "hearthbot.db")
    try:
        await store.accept(incoming("m1", "hello"), "hello")  # the -wal and -shm files exist now
        modes = {p.name: mode(p) for p in data.iterdir()}
    finally:
        await store.close()
    assert mode(data) == 0o700
    assert modes == {"hearthbot.db": 0o600, "hearthbot.db-wal": 0o600, "hearthbot.db-shm": 0o600}


async def test_files_an_older_version_left_open_are_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db = data / "hearthbot.db"
    before = os.umask(0o022)
    try:
        raw = sqlite3.connect(db)
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("CREATE TABLE t (x)")
        raw.commit()
        opened_files = {p.name: mode(p) for p in data.iterdir()}
        store = await Store.open(db)  # while the old files are still there
        raw.close()
    finally:
        os.umask(before)
    try:
        now = {p.name: mode(p) for p in data.iterdir()}
    finally:
        await store.close()
    assert opened_files == dict.fromkeys(
        ("hearthbot.db", "hearthbot.db-wal", "hearthbot.db-shm"), 0o644
    )
    assert mode(data) == 0o700
    assert now == dict.fromkeys(("hearthbot.db", "hearthbot.db-wal", "hearthbot.db-shm"), 0o600)


async def _forget(store: Store) -> None:
    assert await store.forget_user("console:alice") == 2


async def _purge(store: Store) -> None:
    assert await store.purge(time.time()) == 4


async def _redact(store: Store) -> None:
    for message_id in ("m1", "m2"):
        assert await store.delete_message("console", message_id)


async def _edit(store: Store) -> None:
    for message_id in ("m1", "m2"):
        assert await store.edit_message("console", message_id, "console:alice", "nothing to see")


async def _reset(store: Store) -> None:
    assert await store.reset_channel("console:c1") == 4


@pytest.mark.parametrize(
    "delete",
    [_forget, _purge, _redact, _edit, _reset],
    ids=["forget", "purge", "redaction", "edit", "reset"],
)
async def test_deleted_text_leaves_no_byte_in_any_file(
    tmp_path: Path, delete: Callable[[Store], Awaitable[None]]
) -> None:
    data = tmp_path / "data"
    store = await Store.open(data / "hearthbot.db")
    try:
        for message_id, text in (("m1", SECRET), ("m2", LONG_SECRET)):
            row = await store.accept(incoming(message_id, text), text)
            assert row is not None
            assert await store.complete(row, "console:c1", "an answer")
        await store.update_scope("global", temperature=0.5)  # more pages in the -wal
        assert files_holding(data, SECRET)  # the test sees the text where it is
        await delete(store)
        assert files_holding(data, SECRET) == []
    finally:
        await store.close()
    assert files_holding(data, SECRET) == []


async def test_forget_through_the_daemon_leaves_no_byte_under_data_dir(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = tmp_path / "data"
    async with daemon_for(data, tiny_model) as (daemon, adapter):
        answer = await ask(daemon, adapter, SECRET, author="a", name="A")
        assert SECRET not in answer  # else the bot's own answer would hold it (not forgotten)
        await ask(daemon, adapter, "and one more thing", author="b", name="B")
        assert files_holding(data, SECRET)  # the test sees the text where it is
        assert "1 messages" in await ask(daemon, adapter, "!forget", author="a")
        assert files_holding(data, SECRET) == []
        await ask(daemon, adapter, "still there?", author="b", name="B")  # and it carries on
    assert files_holding(data, SECRET) == []


def test_check_makes_data_dir_as_a_start_would(tmp_path: Path, umask: int) -> None:
    from bot.app.check.host import writable_dir

    assert writable_dir(tmp_path / "data").ok
    assert mode(tmp_path / "data") == 0o700
