"""The store's SQLite connection: private files, the one write path, numbered migrations.

Every write, one statement or many, goes through one path (`transaction`, or `at_once` for
a transaction that needs no await between its statements): on the one shared connection a
write sent while another coroutine's transaction is open would otherwise run inside it and be
rolled back with it. A write that fails (a full disk, a lock held elsewhere) raises StoreError,
leaves nothing half-written, and is reported by `problem` until a write succeeds again. Schema
changes are numbered migrations (bot/migrations.py) applied in order (PRAGMA user_version), so
an old install keeps working after an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Self, TypeVar

import aiosqlite

from bot.migrations import MIGRATIONS
from bot.private_files import make_private, private_dir, private_file

WAL_FILES = ("-wal", "-shm")
T = TypeVar("T")


class StoreError(Exception):
    """A write failed (a full disk, a lock held too long, an I/O error): nothing of it was
    saved, and it may be tried again."""


class Database:
    """One SQLite connection with one write path, private files and numbered migrations."""

    def __init__(self, db: aiosqlite.Connection, path: Path | None = None) -> None:
        self._db = db
        self.path = path  # the database file: what the store keeps beside it is in its folder
        # One connection: a transaction spans awaits, so no other write may come in between.
        self._write_lock = asyncio.Lock()
        self.problem: str | None = None  # why the last write failed, until one succeeds
        # Deletions and edits scrubbed so far: a summary holding the text went with it, so
        # bot.summarizer looks at every channel again when this changes.
        self.scrubs = 0

    @classmethod
    async def open(cls, path: Path) -> Self:
        # Owner only, whatever the umask; SQLite gives -wal and -shm the database's mode when
        # it creates them, and ones an older version left behind are tightened here.
        private_dir(path.parent)
        private_file(path)
        for sidecar in WAL_FILES:
            make_private(path.with_name(path.name + sidecar))
        # isolation_level=None: transactions are explicit (see `transaction`).
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives a crash
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            # Deleted text is overwritten with zeros, not merely marked free (see `_scrub`).
            await db.execute("PRAGMA secure_delete = ON")
            store = cls(db, path)
            await store._migrate()
            await store._opened()
        except BaseException:
            await db.close()  # else its thread outlives us (and warns in __del__)
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one write path: all or nothing, and never interleaved with another write.
        A database error raises StoreError."""
        async with self._write_lock:
            with self._reported():
                await self._begin()
                try:
                    yield self._db
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise

    async def at_once(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` as one transaction, as `transaction` makes it, but run whole on the
        connection's thread once SQLite's lock is taken: two round trips to that thread, not
        one per statement (each costs a thread switch each way; the answer path's writes are
        hot). Cancelled once its work has begun, it still ends: committed or rolled back."""
        async with self._write_lock:
            return await self._at_once(work)

    async def _at_once(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`at_once` for a caller that holds the write lock."""

        def run(db: sqlite3.Connection) -> T:
            try:
                result = work(db)
                db.execute("COMMIT")
                return result
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

        with self._reported():
            # Its own trip: waiting for a lock held elsewhere can be cancelled, writing nothing.
            await self._begin()
            # aiosqlite's one entry for running a function on its connection's thread.
            return await self._db._execute(run, self._db._conn)

    async def _begin(self) -> None:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            # Also when cancelled: a BEGIN already sent still runs, and must not leave the
            # connection inside a transaction that every later write would fail on.
            await self._rollback()
            raise

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """A database error raises StoreError and is `problem` until a write succeeds."""
        try:
            yield
        except sqlite3.Error as exc:
            self.problem = str(exc) or type(exc).__name__
            raise StoreError(self.problem) from exc
        self.problem = None

    async def _rollback(self) -> None:
        # SQLite may have rolled back already (it does on a full disk): nothing to undo then.
        with contextlib.suppress(sqlite3.Error):
            await self._db.execute("ROLLBACK")

    async def _write(self, sql: str, args: Sequence[object] = ()) -> int:
        """One statement through the write path; how many rows it changed."""
        async with self.transaction() as db:
            cur = await db.execute(sql, args)
        return cur.rowcount

    async def _read(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        """A query's rows, read in one call on the connection's thread: a statement left
        open across an await would make `_scrub`'s checkpoint fail ("table is locked")."""
        return list(await self._db.execute_fetchall(sql, args))

    async def read(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        """A query's rows, for a module that keeps a table of its own (bot.usage)."""
        return await self._read(sql, args)

    async def _scrub(self) -> None:
        """After deleting text: copy the -wal file into the database and truncate it, so no
        older copy of a deleted page stays on disk (secure_delete zeroes it in the database
        file; the -wal file still holds every version written since the last checkpoint)."""
        self.scrubs += 1
        async with self._write_lock:  # never inside another coroutine's transaction
            # Its row read: a statement left unfinished would keep the next write from
            # committing (aiosqlite's thread holds the last cursor until its next call).
            await self._db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _opened(self) -> None:
        """After the migrations, for a part of the store that tidies its own files."""

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema v{version} is newer than this hearthbot (v{len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump is part of the same script.
            await self._db.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
