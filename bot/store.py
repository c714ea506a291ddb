"""SQLite memory (aiosqlite, WAL): history per channel, pending work, per-scope settings.

Schema changes are numbered migrations applied in order (PRAGMA user_version), so an old
install keeps working after an update. A user message and its pending row are written in one
transaction, and so are an answer and the removal of its pending row: that is what makes
"accepted means answered exactly once" hold across a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from bot.events import Incoming

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,              -- Incoming.channel_key
        platform_message_id TEXT,           -- the platform's id, for edits and deletions
        author_id TEXT NOT NULL,            -- Incoming.user_key, or 'bot'
        author_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_channel ON messages (channel, id);
    CREATE INDEX messages_by_author ON messages (author_id);
    CREATE UNIQUE INDEX messages_platform_id ON messages (channel, platform_message_id)
        WHERE role = 'user' AND platform_message_id IS NOT NULL;
    CREATE TABLE pending (
        message_row INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        incoming TEXT NOT NULL,             -- Incoming as JSON, to reopen a reply after restart
        created_at REAL NOT NULL
    );
    CREATE TABLE scope_settings (
        scope TEXT PRIMARY KEY,             -- 'global', 'server:<platform>:<id>', 'channel:<key>'
        persona TEXT,
        temperature REAL,
        seed INTEGER                        -- NULL: inherit; -1: random despite the persona
    );
    CREATE TABLE channel_window (
        channel TEXT PRIMARY KEY,
        first_row INTEGER NOT NULL          -- oldest message still in the model's context
    );
    """,
)

RANDOM_SEED = -1


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One turn of a channel's history as stored: a user's message or the bot's answer."""

    row: int
    role: Literal["user", "assistant"]
    author_id: str
    author_name: str
    text: str


@dataclass(frozen=True, slots=True)
class ScopeSettings:
    """The overrides set for one scope (global, a server, a channel); None inherits."""

    persona: str | None = None
    temperature: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message accepted but not answered yet, as saved (read back after a restart)."""

    row: int
    message: Incoming
    created_at: float


class Store:
    """hearthbot's memory on one SQLite connection: history, pending work, scope settings."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection: a transaction spans awaits, so two must never interleave.
        self._tx_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (see `transaction`).
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives a crash
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            store = cls(db)
            await store._migrate()
        except BaseException:
            await db.close()  # else its thread outlives us (and warns in __del__)
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._tx_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

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

    # -- messages -----------------------------------------------------------------------------

    async def accept(self, message: Incoming, text: str) -> int | None:
        """Save a user message and mark it pending. None if this platform message was already
        accepted (a platform delivered it twice): it must not be answered twice."""
        now = time.time()
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO messages (channel, platform_message_id, author_id,"
                " author_name, role, text, created_at) VALUES (?, ?, ?, ?, 'user', ?, ?)",
                (
                    message.channel_key,
                    message.message_id,
                    message.user_key,
                    message.author_name,
                    text,
                    message.received_at,
                ),
            )
            if cur.rowcount == 0:
                return None
            row = cur.lastrowid
            assert row is not None
            await db.execute(
                "INSERT INTO pending (message_row, incoming, created_at) VALUES (?, ?, ?)",
                (row, message.to_json(), now),
            )
        return row

    async def complete(self, pending_row: int, channel: str, reply: str) -> bool:
        """Save the answer and clear the pending mark in one step. False if the pending mark
        was already gone (answered or forgotten meanwhile): the answer is then not stored.
        An empty reply clears the mark without adding a turn."""
        async with self.transaction() as db:
            cur = await db.execute("DELETE FROM pending WHERE message_row = ?", (pending_row,))
            if cur.rowcount == 0:
                return False
            if not reply:
                return True
            await db.execute(
                "INSERT INTO messages (channel, author_id, author_name, role, text, created_at)"
                " VALUES (?, 'bot', 'hearthbot', 'assistant', ?, ?)",
                (channel, reply, time.time()),
            )
        return True

    async def drop_pending(self, pending_row: int) -> None:
        """The message will not be answered (failed, or too old after a restart)."""
        await self._db.execute("DELETE FROM pending WHERE message_row = ?", (pending_row,))

    async def discard(self, row: int) -> None:
        """Remove a message that can never be part of a prompt (and its pending mark)."""
        await self._db.execute("DELETE FROM messages WHERE id = ?", (row,))

    async def pending(self) -> list[PendingMessage]:
        async with self._db.execute(
            "SELECT message_row, incoming, created_at FROM pending ORDER BY message_row"
        ) as cur:
            rows = await cur.fetchall()
        return [PendingMessage(r[0], Incoming.from_json(r[1]), r[2]) for r in rows]

    async def history(self, channel: str, through_row: int | None = None) -> list[StoredMessage]:
        """The channel's messages from its context window start, oldest first, up to and
        including row `through_row` when given (the message being answered)."""
        query = (
            "SELECT m.id, m.role, m.author_id, m.author_name, m.text FROM messages m"
            " LEFT JOIN channel_window w ON w.channel = m.channel"
            " WHERE m.channel = ? AND m.id >= coalesce(w.first_row, 0) AND m.id <= ?"
            " ORDER BY m.id"
        )
        limit = through_row if through_row is not None else 2**62
        async with self._db.execute(query, (channel, limit)) as cur:
            rows = await cur.fetchall()
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def set_window_start(self, channel: str, first_row: int) -> None:
        await self._db.execute(
            "INSERT INTO channel_window (channel, first_row) VALUES (?, ?)"
            " ON CONFLICT (channel) DO UPDATE SET first_row = excluded.first_row",
            (channel, first_row),
        )

    async def reset_channel(self, channel: str) -> int:
        """Forget a channel's history (messages still waiting for an answer stay)."""
        async with self.transaction() as db:
            cur = await db.execute(
                "DELETE FROM messages WHERE channel = ?"
                " AND id NOT IN (SELECT message_row FROM pending)",
                (channel,),
            )
            await db.execute("DELETE FROM channel_window WHERE channel = ?", (channel,))
        return cur.rowcount

    async def forget_user(self, user_key: str) -> int:
        """Delete everything a user wrote, everywhere (pending work included)."""
        cur = await self._db.execute("DELETE FROM messages WHERE author_id = ?", (user_key,))
        return cur.rowcount

    async def channels_of(self, user_key: str) -> list[str]:
        """The channels where a user has messages stored."""
        async with self._db.execute(
            "SELECT DISTINCT channel FROM messages WHERE author_id = ? ORDER BY channel",
            (user_key,),
        ) as cur:
            return [str(r[0]) for r in await cur.fetchall()]

    async def purge(self, before: float) -> int:
        """Delete messages older than `before` (a Unix time), except those awaiting an answer."""
        cur = await self._db.execute(
            "DELETE FROM messages WHERE created_at < ?"
            " AND id NOT IN (SELECT message_row FROM pending)",
            (before,),
        )
        return cur.rowcount

    async def edit_message(self, channel: str, platform_message_id: str, text: str) -> bool:
        cur = await self._db.execute(
            "UPDATE messages SET text = ? WHERE channel = ? AND platform_message_id = ?",
            (text, channel, platform_message_id),
        )
        return cur.rowcount > 0

    async def delete_message(self, channel: str, platform_message_id: str) -> bool:
        cur = await self._db.execute(
            "DELETE FROM messages WHERE channel = ? AND platform_message_id = ?",
            (channel, platform_message_id),
        )
        return cur.rowcount > 0

    async def remembers(self, channel: str, platform_message_id: str | None, text: str) -> bool:
        """Whether the channel's history holds this message (by platform id, or its text:
        the bot's own messages are stored without one)."""
        async with self._db.execute(
            "SELECT 1 FROM messages WHERE channel = ? AND (platform_message_id = ? OR text = ?)"
            " LIMIT 1",
            (channel, platform_message_id, text),
        ) as cur:
            return await cur.fetchone() is not None

    async def reopen(self, message: Incoming) -> int | None:
        """Make a stored user message pending again and drop the answers given after it (up to
        the next user message), so it is answered anew. None if it is not stored."""
        channel = message.channel_key
        async with self.transaction() as db:
            async with db.execute(
                "SELECT id FROM messages WHERE channel = ? AND platform_message_id = ?"
                " AND role = 'user'",
                (channel, message.message_id),
            ) as cur:
                found = await cur.fetchone()
            if found is None:
                return None
            row = int(found[0])
            await db.execute(
                "DELETE FROM messages WHERE channel = ? AND role = 'assistant' AND id > ?"
                " AND id < coalesce((SELECT min(id) FROM messages WHERE channel = ?"
                " AND role = 'user' AND id > ?), 1 << 62)",
                (channel, row, channel, row),
            )
            await db.execute(
                "INSERT OR IGNORE INTO pending (message_row, incoming, created_at)"
                " VALUES (?, ?, ?)",
                (row, message.to_json(), time.time()),
            )
        return row

    # -- settings -----------------------------------------------------------------------------

    async def scope_settings(self, scopes: Sequence[str]) -> list[ScopeSettings]:
        """Settings for each scope, in the order asked (missing scopes are empty)."""
        marks = ",".join("?" * len(scopes))
        async with self._db.execute(
            "SELECT scope, persona, temperature, seed FROM scope_settings"
            f" WHERE scope IN ({marks})",
            tuple(scopes),
        ) as cur:
            found = {r[0]: ScopeSettings(r[1], r[2], r[3]) for r in await cur.fetchall()}
        return [found.get(scope, ScopeSettings()) for scope in scopes]

    async def update_scope(self, scope: str, **changes: object) -> None:
        """Set some of persona / temperature / seed for a scope (None clears one)."""
        allowed = {"persona", "temperature", "seed"}
        if not changes or set(changes) - allowed:
            raise ValueError(f"unknown scope settings: {set(changes) - allowed}")
        columns = ", ".join(changes)
        marks = ", ".join("?" * len(changes))
        updates = ", ".join(f"{c} = excluded.{c}" for c in changes)
        await self._db.execute(
            f"INSERT INTO scope_settings (scope, {columns}) VALUES (?, {marks})"
            f" ON CONFLICT (scope) DO UPDATE SET {updates}",
            (scope, *changes.values()),
        )
