"""A real SQLite store made to fail the two ways a host does: a full disk and a write lock
held by another process. Nothing is mocked: the daemon's own connection gets the errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import aiosqlite

# Filler rows live in a channel of their own, sorting after every real channel key, so no
# conversation's history ever shows them.
FILLER_CHANNEL = "zz-filler"
# SQLite's own ceiling for max_page_count: in effect, no cap.
NO_CAP = 4294967294


async def fill_disk(db: aiosqlite.Connection) -> None:
    """From now on, a write on `db` that needs room gets "database or disk is full", as on a
    full disk. The file is capped at its size now (PRAGMA max_page_count, which holds for
    this connection only), then its free room is used up by filler rows, ever smaller."""
    await db.execute("PRAGMA max_page_count = 1")  # never below the size now: capped there
    for size in (2000, 500, 100, 20, 1):
        while True:
            try:
                await db.execute(
                    "INSERT INTO messages (channel, author_id, author_name, role, text,"
                    " created_at) VALUES (?, 'filler', 'filler', 'assistant', ?, 0)",
                    (FILLER_CHANNEL, "x" * size),
                )
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                break


async def free_disk(db: aiosqlite.Connection) -> None:
    """The disk has room again. (The filler stays: deleting it on the store's connection
    from outside the store could land inside one of its transactions.)"""
    await db.execute(f"PRAGMA max_page_count = {NO_CAP}")


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process holds the database's write lock (BEGIN IMMEDIATE) until the block
    ends: the daemon's writes wait out their busy timeout, then get "database is locked"."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
