"""Rolling summaries in SQLite: per channel, of the messages trimmed out of its window, or
that its next trim drops (bot.prompt.window.doomed: summarized ahead, ready at the trim).

A summary covers the channel's messages up to `through_row`. A deletion, an edit, `!forget`
or a retention purge of one of them deletes the summary in the same transaction (migration 6's
triggers), and one being written meanwhile is not saved (`save_summary` checks what it was
built from), so a summary never keeps words that are gone. bot.summarizer writes them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot import texts
from bot.database import Database


@dataclass(frozen=True, slots=True)
class Summary:
    """A channel's summary as stored: the newest, and the one prompts show (which becomes
    the newest only at a trim point, so that prompts keep their prefix between trims)."""

    text: str
    through_row: int
    tokens: int
    shown: str | None = None
    shown_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Trimmed:
    """A message that left the window and is not summarized yet."""

    row: int
    role: str
    author_name: str
    text: str


# Messages of channel_window w that left the window, or that its next trim drops.
_LEAVING = "(m.id < w.first_row OR m.id <= coalesce(w.doomed_row, 0))"
# Channel_window w, joined with its summary s, has messages leaving it that s does not cover.
UNSUMMARIZED = (
    "EXISTS (SELECT 1 FROM messages m WHERE m.channel = w.channel"
    f" AND m.id > coalesce(s.through_row, 0) AND {_LEAVING})"
)
# The columns `summary_of` reads.
SUMMARY_COLUMNS = "text, through_row, tokens, shown, shown_tokens"


def summary_of(row: Sequence[Any]) -> Summary:
    """A summary from a row of SUMMARY_COLUMNS."""
    text, through_row, tokens, shown, shown_tokens = row
    return Summary(str(text), int(through_row), int(tokens), shown, int(shown_tokens or 0))


class SummaryStore(Database):
    """The summaries table, part of bot.store.Store (one connection, one write path)."""

    async def summary(self, channel: str) -> Summary | None:
        rows = await self._read(
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE channel = ?", (channel,)
        )
        return summary_of(rows[0]) if rows else None

    async def pin_summary(self, channel: str, through_row: int) -> None:
        """From now on prompts show the newest summary (if it is still the one through
        `through_row`): called at a trim point."""
        await self._write(
            "UPDATE summaries SET shown = text, shown_tokens = tokens"
            " WHERE channel = ? AND through_row = ?",
            (channel, through_row),
        )

    async def trimmed(self, channel: str, after_row: int, limit: int) -> list[Trimmed]:
        """Up to `limit` messages after `after_row` that left the window or that its next
        trim drops."""
        rows = await self._read(
            "SELECT m.id, m.role, m.author_name, m.text FROM messages m"
            " JOIN channel_window w ON w.channel = m.channel"
            f" WHERE m.channel = ? AND m.id > ? AND {_LEAVING} ORDER BY m.id LIMIT ?",
            (channel, after_row, limit),
        )
        return [Trimmed(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def unsummarized(self, channels: Sequence[str]) -> list[str]:
        """Those of `channels` with messages leaving the window that no summary covers."""
        if not channels:
            return []
        marks = ",".join("?" * len(channels))
        rows = await self._read(
            "SELECT w.channel FROM channel_window w LEFT JOIN summaries s"
            f" ON s.channel = w.channel WHERE w.channel IN ({marks}) AND {UNSUMMARIZED}",
            tuple(channels),
        )
        return [str(r[0]) for r in rows]

    async def save_summary(
        self,
        channel: str,
        text: str,
        tokens: int,
        previous: Summary | None,
        built_from: Sequence[Trimmed],
    ) -> bool:
        """Store a summary made from `previous` and the messages `built_from`, unless one of
        them changed or went while it was being written (then it may hold words that are
        gone): False then, and nothing is stored."""
        async with self.transaction() as db:
            async with db.execute(
                "SELECT text, through_row FROM summaries WHERE channel = ?", (channel,)
            ) as cur:
                now = await cur.fetchone()
            was = (previous.text, previous.through_row) if previous else None
            if (tuple(now) if now else None) != was:
                return False
            marks = ",".join("?" * len(built_from))
            async with db.execute(
                f"SELECT id, text FROM messages WHERE id IN ({marks})",
                tuple(m.row for m in built_from),
            ) as cur:
                found = {int(r[0]): str(r[1]) for r in await cur.fetchall()}
            if found != {m.row: m.text for m in built_from}:
                return False
            await db.execute(
                "INSERT INTO summaries (channel, text, through_row, tokens, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET"
                " text = excluded.text, through_row = excluded.through_row,"
                " tokens = excluded.tokens, updated_at = excluded.updated_at",
                (channel, text, built_from[-1].row, tokens, time.time()),
            )
        return True

    async def set_doomed(self, channel: str, row: int) -> None:
        """The next trim of the channel's window drops its messages up to `row`."""
        await self._write(
            "INSERT INTO channel_window (channel, first_row, doomed_row) VALUES (?, 0, ?)"
            " ON CONFLICT (channel) DO UPDATE SET doomed_row = excluded.doomed_row",
            (channel, row),
        )

    async def clear_summary(self, channel: str) -> None:
        await self._write("DELETE FROM summaries WHERE channel = ?", (channel,))


def with_summary(system_prompt: str, summary: str | None) -> str:
    """The system prompt, with a summary right after it when there is one."""
    return texts.with_summary(system_prompt, summary) if summary else system_prompt
