"""SQLite memory (aiosqlite, WAL): history per channel, pending work, per-scope settings.

A user message and its pending row are written in one transaction, and so are an answer and
the removal of its pending row: that is what makes "accepted means answered exactly once" hold
across a crash. The connection, its write path and migrations are bot/database.py's; the
history's reads are bot/history.py's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from bot.events import Incoming, Quoted
from bot.forgotten import ForgottenStore, mark_forgotten
from bot.history import ON_PLATFORM, HistoryStore, platform_args, quoted_row
from bot.image_store import ImageStore, Picture, link_pictures
from bot.notes import NotesStore
from bot.summaries import SummaryStore
from bot.usage import ReplyUsage, add_usage, local_day

RANDOM_SEED = -1


@dataclass(frozen=True, slots=True)
class ScopeSettings:
    """The overrides set for one scope (global, a server, a channel); None inherits."""

    persona: str | None = None
    temperature: float | None = None
    seed: int | None = None
    trigger: str | None = None  # bot.triggers' mode
    auto_thread: bool | None = None  # a mention opens a thread (bot.events.AutoThreads)


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message accepted but not answered yet, as saved (read back after a restart)."""

    row: int
    message: Incoming
    created_at: float


class Store(HistoryStore, NotesStore, SummaryStore, ForgottenStore, ImageStore):
    """hearthbot's memory on one SQLite connection: history, pending, settings, notes,
    summaries, who had it forget them, the pictures in context windows."""

    # -- messages -----------------------------------------------------------------------------

    async def accept(
        self,
        message: Incoming,
        text: str,
        quoted: Quoted | None = None,
        pictures: Sequence[Picture] = (),
    ) -> int | None:
        """Save a user message (and its `pictures`) and mark it pending. None if this platform
        message was already accepted (a platform delivered it twice): it must not be answered
        twice. `quoted`: the replied-to message as the adapter has it, to find the bot's own
        answer (stored without a platform id) and to know whose words the reply quotes."""
        now = time.time()

        def save(db: sqlite3.Connection) -> int | None:
            quote_row, quote_author = quoted_row(db, message, quoted)
            cur = db.execute(
                "INSERT OR IGNORE INTO messages (channel, platform_message_id, author_id,"
                " author_name, role, text, created_at, reply_to_id, reply_to_row,"
                " reply_to_author) VALUES (?, ?, ?, ?, 'user', ?, ?, ?, ?, ?)",
                (
                    message.channel_key,
                    message.message_id,
                    message.user_key,
                    message.author_name,
                    text,
                    message.received_at,
                    message.reply_to_id,
                    quote_row,
                    quote_author,
                ),
            )
            if cur.rowcount == 0:
                return None
            row = cur.lastrowid
            assert row is not None
            db.execute(
                "INSERT INTO pending (message_row, incoming, created_at) VALUES (?, ?, ?)",
                (row, message.to_json(), now),
            )
            if self.images_dir is not None:  # (a store without a folder keeps no pictures)
                link_pictures(db, row, pictures)
            return row

        async with self._write_lock:  # the pictures' files and their rows, no sweep between
            await self.write_pictures(pictures)
            return await self._at_once(save)

    async def complete(
        self,
        pending_row: int,
        channel: str,
        reply: str,
        usage: ReplyUsage | None = None,
        joined: Sequence[int] = (),
    ) -> bool:
        """Save the answer, add its `usage` to the totals and clear the pending mark in one
        step (and those of the `joined` rows: a burst it answers too). False if the mark was
        already gone (answered or forgotten meanwhile): the answer is then not stored. An
        empty reply adds no turn."""

        def save(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM pending WHERE message_row = ?", (pending_row,))
            if cur.rowcount == 0:
                return False
            add_usage(db, channel, usage, local_day())
            db.executemany("DELETE FROM pending WHERE message_row = ?", [(r,) for r in joined])
            if reply:
                db.execute(
                    "INSERT INTO messages (channel, author_id, author_name, role, text,"
                    " created_at, answer_to) VALUES (?, 'bot', 'hearthbot', 'assistant', ?, ?, ?)",
                    (channel, reply, time.time(), pending_row),
                )
            return True

        return await self.at_once(save)

    async def drop_pending(self, *pending_rows: int) -> None:
        """The messages will not be answered (failed, or too old after a restart)."""
        marks = ",".join("?" * len(pending_rows))
        await self._write(f"DELETE FROM pending WHERE message_row IN ({marks})", pending_rows)

    async def discard(self, row: int) -> None:
        """Remove a message that can never be part of a prompt (and its pending mark)."""
        await self._write("DELETE FROM messages WHERE id = ?", (row,))
        await self._scrub()

    async def pending(self) -> list[PendingMessage]:
        rows = await self._read("SELECT message_row, incoming, created_at FROM pending ORDER BY 1")
        return [PendingMessage(r[0], Incoming.from_json(r[1]), r[2]) for r in rows]

    async def set_window_start(self, channel: str, first_row: int) -> None:
        """The oldest message the model sees; the pictures of those before it are deleted."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO channel_window (channel, first_row) VALUES (?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET first_row = excluded.first_row",
                (channel, first_row),
            )
            unlinked = await self.unlink_before(db, channel, first_row)
        if unlinked:
            await self.sweep_images()

    async def reset_channel(self, channel: str) -> int:
        """Forget a channel's history (messages still waiting for an answer stay)."""
        async with self.transaction() as db:
            cur = await db.execute(
                "DELETE FROM messages WHERE channel = ?"
                " AND id NOT IN (SELECT message_row FROM pending)",
                (channel,),
            )
            await db.execute("DELETE FROM channel_window WHERE channel = ?", (channel,))
            await db.execute("DELETE FROM summaries WHERE channel = ?", (channel,))
        await self._scrub()
        return cur.rowcount

    async def forget_user(self, user_key: str) -> int:
        """Delete everything a user wrote, everywhere (pending work included), their notes,
        and every reference to it: a reply to one of their messages quotes nothing any more,
        even a message of theirs the bot never stored; and their messages on the platform,
        written until now, are forgotten too (bot.forgotten)."""
        async with self.transaction() as db:
            await mark_forgotten(db, user_key, time.time())
            cur = await db.execute("DELETE FROM messages WHERE author_id = ?", (user_key,))
            await db.execute("DELETE FROM notes WHERE user_key = ?", (user_key,))
            await db.execute(
                "UPDATE messages SET reply_to_id = NULL, reply_to_row = NULL,"
                " reply_to_author = NULL WHERE reply_to_author = ?",
                (user_key,),
            )
        await self._scrub()
        return cur.rowcount

    async def channels_of(self, user_key: str) -> list[str]:
        """The channels where a user has messages stored, or replies quoting them."""
        rows = await self._read(
            "SELECT DISTINCT channel FROM messages WHERE author_id = ? OR reply_to_author = ?"
            " ORDER BY channel",
            (user_key, user_key),
        )
        return [str(r[0]) for r in rows]

    async def purge(self, before: float) -> int:
        """Delete messages older than `before` (a Unix time), except those awaiting an answer."""
        deleted = await self._write(
            "DELETE FROM messages WHERE created_at < ?"
            " AND id NOT IN (SELECT message_row FROM pending)",
            (before,),
        )
        await self._scrub()
        return deleted

    async def edit_message(
        self, platform: str, platform_message_id: str, author_key: str, text: str
    ) -> list[str]:
        """An edit by `author_key` of their message: the channels whose prompts change (the
        message's, and those of replies quoting it). Empty when no message of theirs has that
        id: nobody edits another's words."""
        async with self.transaction() as db:
            cur = await db.execute(
                f"UPDATE messages SET text = ? WHERE platform_message_id = ? AND {ON_PLATFORM}"
                " AND role = 'user' AND author_id = ?",
                (text, platform_message_id, *platform_args(platform), author_key),
            )
            if cur.rowcount == 0:
                return []
            channels = await self._channels_of(db, platform, platform_message_id)
        await self._scrub()  # the old text goes as a deletion does
        return channels

    async def delete_message(self, platform: str, platform_message_id: str) -> list[str]:
        """Delete a message wherever it is stored (a thread's message may be named by its
        room) and cut every reply's reference to it: the channels whose prompts held it."""
        async with self.transaction() as db:
            channels = await self._channels_of(db, platform, platform_message_id)
            await db.execute(
                f"DELETE FROM messages WHERE platform_message_id = ? AND {ON_PLATFORM}",
                (platform_message_id, *platform_args(platform)),
            )
            await db.execute(
                "UPDATE messages SET reply_to_id = NULL, reply_to_row = NULL,"
                f" reply_to_author = NULL WHERE reply_to_id = ? AND {ON_PLATFORM}",
                (platform_message_id, *platform_args(platform)),
            )
        await self._scrub()
        return channels

    async def _channels_of(
        self, db: aiosqlite.Connection, platform: str, platform_message_id: str
    ) -> list[str]:
        """The channels holding a message, or a reply that quotes it."""
        async with db.execute(
            "SELECT DISTINCT channel FROM messages WHERE (platform_message_id = ?"
            f" OR reply_to_id = ?) AND {ON_PLATFORM} ORDER BY channel",
            (platform_message_id, platform_message_id, *platform_args(platform)),
        ) as cur:
            return [str(r[0]) for r in await cur.fetchall()]

    async def reopen(self, message: Incoming) -> int | None:
        """Make a stored user message pending again and drop its answer, so it is answered
        anew. None if it is not stored. An answer saved before answers named their question
        (schema v4) is found by position: after it, before the next user message."""
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
                "DELETE FROM messages WHERE role = 'assistant' AND (answer_to = ?"
                " OR (answer_to IS NULL AND channel = ? AND id > ?"
                " AND id < coalesce((SELECT min(id) FROM messages WHERE channel = ?"
                " AND role = 'user' AND id > ?), 1 << 62)))",
                (row, channel, row, channel, row),
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
        rows = await self._read(
            "SELECT scope, persona, temperature, seed, trigger_mode, auto_thread"
            f" FROM scope_settings WHERE scope IN ({marks})",
            tuple(scopes),
        )
        found = {r[0]: ScopeSettings(r[1], r[2], r[3], r[4], _flag(r[5])) for r in rows}
        return [found.get(scope, ScopeSettings()) for scope in scopes]

    async def auto_thread_channels(self, platform: str) -> dict[str, bool]:
        """Channel id → `!autothread` on or off, for the channels of `platform` set so."""
        prefix = f"channel:{platform}:"
        rows = await self._read(
            "SELECT scope, auto_thread FROM scope_settings"
            " WHERE auto_thread IS NOT NULL AND substr(scope, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {str(r[0])[len(prefix) :]: bool(r[1]) for r in rows}

    async def update_scope(self, scope: str, **changes: object) -> None:
        """Set some of persona / temperature / seed / trigger / auto_thread for a scope (None
        clears one)."""
        allowed = {"persona", "temperature", "seed", "trigger", "auto_thread"}
        if not changes or set(changes) - allowed:
            raise ValueError(f"unknown scope settings: {set(changes) - allowed}")
        changes = {("trigger_mode" if c == "trigger" else c): v for c, v in changes.items()}
        columns = ", ".join(changes)  # (TRIGGER is SQL's word)
        marks = ", ".join("?" * len(changes))
        updates = ", ".join(f"{c} = excluded.{c}" for c in changes)
        await self._write(
            f"INSERT INTO scope_settings (scope, {columns}) VALUES (?, {marks})"
            f" ON CONFLICT (scope) DO UPDATE SET {updates}",
            (scope, *changes.values()),
        )


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)
