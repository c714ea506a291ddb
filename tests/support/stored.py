"""What the daemon's SQLite file holds, read directly: tests check what was stored without
the store growing methods the bot itself never calls."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path


def _one(db: Path, query: str, args: tuple[object, ...] = ()) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(query, args).fetchone()[0])


def message_count(db: Path, channel: str | None = None) -> int:
    """Messages stored in `channel` (a channel key), or in all channels; those before a
    channel's context window count too: they are hidden, not deleted."""
    if channel is None:
        return _one(db, "SELECT count(*) FROM messages")
    return _one(db, "SELECT count(*) FROM messages WHERE channel = ?", (channel,))


def pending_count(db: Path) -> int:
    """Messages accepted but not answered yet."""
    return _one(db, "SELECT count(*) FROM pending")


def schema_version(db: Path) -> int:
    return _one(db, "PRAGMA user_version")


def everything_stored(db: Path) -> str:
    """Every value in every table, as one text: what a search of the database would find
    (history, quotes, pending messages' saved JSON, settings)."""
    with closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        values = [
            str(value)
            for table in tables
            for row in conn.execute(f'SELECT * FROM "{table}"')  # names from SQLite itself
            for value in row
        ]
    return "\n".join(values)
