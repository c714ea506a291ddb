"""Reading a channel's history from SQLite: the turns in its context window, and the links
a reply chain passes through. Part of bot.store.Store (one connection, one write path)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bot.database import Database


@dataclass(frozen=True, slots=True)
class StoredQuote:
    """What a stored reply quotes: a stored row (its text read with the reply's), or, for a
    message the bot never stored, only its platform id (bot.prompt.quotes fetches it when the
    prompt is built). A quoted row that is deleted takes the whole reference with it."""

    platform_message_id: str | None
    row: int | None = None
    author_name: str | None = None  # the quoted row's, when stored
    text: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One turn of a channel's history as stored: a user's message or the bot's answer."""

    row: int
    role: Literal["user", "assistant"]
    author_id: str
    author_name: str
    text: str
    quote: StoredQuote | None = None


def _stored(r: Sequence[Any]) -> StoredMessage:
    """A row of (id, role, author_id, author_name, text, reply_to_id, reply_to_row[, the
    quoted row's author_name, text])."""
    quote = StoredQuote(r[5], r[6], *r[7:9]) if r[5] or r[6] else None
    return StoredMessage(r[0], r[1], r[2], r[3], r[4], quote)


class HistoryStore(Database):
    """The history reads of bot.store.Store."""

    async def history(self, channel: str, through_row: int | None = None) -> list[StoredMessage]:
        """The channel's messages from its context window start, oldest first, up to and
        including row `through_row` when given (the message being answered)."""
        query = (
            "SELECT m.id, m.role, m.author_id, m.author_name, m.text,"
            " m.reply_to_id, m.reply_to_row, q.author_name, q.text FROM messages m"
            " LEFT JOIN channel_window w ON w.channel = m.channel"
            " LEFT JOIN messages q ON q.id = m.reply_to_row"
            " WHERE m.channel = ? AND m.id >= coalesce(w.first_row, 0) AND m.id <= ?"
            " ORDER BY m.id"
        )
        limit = through_row if through_row is not None else 2**62
        rows = await self._read(query, (channel, limit))
        return [_stored(r) for r in rows]

    async def chain_link(
        self, channel: str, row: int | None, platform_id: str | None
    ) -> StoredMessage | None:
        """A message a reply chain passes through, by row or else platform id, in `channel`;
        its quote names what it replies to (an answer: its question)."""
        rows = await self._read(
            "SELECT id, role, author_id, author_name, text, reply_to_id,"
            " coalesce(reply_to_row, answer_to) FROM messages WHERE channel = ?"
            " AND (id = ? OR platform_message_id = ?) ORDER BY id DESC LIMIT 1",
            (channel, row, platform_id),
        )
        return next((_stored(r) for r in rows), None)
