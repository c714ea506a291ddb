"""Notes people ask the bot to keep about them (`!remember`), by consent only.

A note is about its author and applies where it was said: across a server (a Discord guild),
or in one channel without a server (a DM, a Matrix room). The model sees a speaker's notes
just before that speaker's latest turn, never in the system prompt: a system prompt that
changed with each speaker would break KV reuse where several people talk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.database import Database
from bot.events import Incoming


@dataclass(frozen=True, slots=True)
class Note:
    """One note as stored: its row and text."""

    row: int
    text: str


def notes_scope(message: Incoming) -> str:
    """Where a note said with `message` applies: its server, else its channel."""
    if message.server_id:
        return f"server:{message.platform}:{message.server_id}"
    return f"channel:{message.channel_key}"


class NotesStore(Database):
    """The notes table, part of bot.store.Store (one connection, one write path)."""

    async def add_note(self, user_key: str, scope: str, text: str, most: int) -> int | None:
        """Keep a note; how many the person has in that scope now. None when they have
        `most` already (checked and added in one transaction, so two at once cannot pass)."""
        async with self.transaction() as db:
            async with db.execute(
                "SELECT count(*) FROM notes WHERE user_key = ? AND scope = ?", (user_key, scope)
            ) as cur:
                found = await cur.fetchone()
            count = int(found[0]) if found else 0
            if count >= most:
                return None
            await db.execute(
                "INSERT INTO notes (user_key, scope, text, created_at) VALUES (?, ?, ?, ?)",
                (user_key, scope, text, time.time()),
            )
        return count + 1

    async def notes(self, user_key: str, scope: str) -> list[Note]:
        """A person's notes in one scope, oldest first."""
        rows = await self._read(
            "SELECT id, text FROM notes WHERE user_key = ? AND scope = ? ORDER BY id",
            (user_key, scope),
        )
        return [Note(int(r[0]), str(r[1])) for r in rows]

    async def clear_notes(self, user_key: str, scope: str) -> int:
        """Delete a person's notes in one scope; how many there were."""
        deleted = await self._write(
            "DELETE FROM notes WHERE user_key = ? AND scope = ?", (user_key, scope)
        )
        await self._scrub()
        return deleted
