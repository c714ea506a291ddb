"""Reading a channel's history from SQLite: the turns in its context window, and the links
a reply chain passes through. Part of bot.store.Store (one connection, one write path).

A prompt reads its history, its speaker's notes and its channel's summary in one statement
(`recall`): each read is a round trip to aiosqlite's thread, which costs more than these
small queries themselves (bench.overhead).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.database import Database
from bot.events import Incoming, Quoted, user_key
from bot.notes import Note
from bot.summaries import SUMMARY_COLUMNS, UNSUMMARIZED, Summary, summary_of

# Messages of one platform: a channel key starts with "<platform>:".
ON_PLATFORM = "substr(channel, 1, ?) = ?"


def platform_args(platform: str) -> tuple[int, str]:
    prefix = f"{platform}:"
    return len(prefix), prefix


def quoted_row(
    db: sqlite3.Connection, message: Incoming, quoted: Quoted | None
) -> tuple[int | None, str | None]:
    """The stored row a reply quotes, and the quoted author's user key."""
    if message.reply_to_id is None:
        return None, None
    found = db.execute(
        f"SELECT id, author_id FROM messages WHERE platform_message_id = ? AND {ON_PLATFORM}"
        " ORDER BY id DESC LIMIT 1",
        (message.reply_to_id, *platform_args(message.platform)),
    ).fetchone()
    if found is None and quoted is not None:
        # The bot's answers are stored without a platform id: found by their text.
        found = db.execute(
            "SELECT id, author_id FROM messages WHERE channel = ? AND role = 'assistant'"
            " AND text = ? ORDER BY id DESC LIMIT 1",
            (message.channel_key, quoted.text),
        ).fetchone()
    if found is not None:
        return int(found[0]), str(found[1])
    return None, user_key(message.platform, quoted.author_id) if quoted else None


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


@dataclass(frozen=True, slots=True)
class Recall:
    """What a prompt reads with its history: the notes of a person in a notes scope
    (bot.notes.notes_scope), and the channel's summary."""

    notes_of: tuple[str, str] | None = None  # (user key, scope)
    summary: bool = False


@dataclass(slots=True)
class Recalled:
    """A prompt's read: the history, the notes and summary asked for (none when not asked),
    and whether messages leaving the channel's window wait for a summary (asked with it)."""

    history: list[StoredMessage]
    notes: list[Note] = field(default_factory=list)
    summary: Summary | None = None
    unsummarized: bool = False


# The history's nine columns, then the channel's messages from its window start through a row.
_HISTORY_COLUMNS = (
    "m.id, m.role, m.author_id, m.author_name, m.text, m.reply_to_id, m.reply_to_row,"
    " q.author_name, q.text"
)
_HISTORY_FROM = (
    " FROM messages m LEFT JOIN channel_window w ON w.channel = m.channel"
    " LEFT JOIN messages q ON q.id = m.reply_to_row"
    " WHERE m.channel = ? AND m.id >= coalesce(w.first_row, 0) AND m.id <= ?"
)
_HISTORY_ROW, _NOTE_ROW, _SUMMARY_ROW, _UNSUMMARIZED_ROW = range(4)
# Rows of four kinds, each kind first, then an order within it, then the history's width
# (NULLs fill the rest). A part not asked for is switched off by its `?` parameter.
_RECALL = (
    f"SELECT {_HISTORY_ROW}, m.id, {_HISTORY_COLUMNS}{_HISTORY_FROM}"
    f" UNION ALL SELECT {_NOTE_ROW}, id, id, text{', NULL' * 7} FROM notes"
    " WHERE ? AND user_key = ? AND scope = ?"
    f" UNION ALL SELECT {_SUMMARY_ROW}, 0, {SUMMARY_COLUMNS}{', NULL' * 4} FROM summaries"
    " WHERE ? AND channel = ?"
    f" UNION ALL SELECT {_UNSUMMARIZED_ROW}, 0{', NULL' * 9} FROM channel_window w"
    f" LEFT JOIN summaries s ON s.channel = w.channel WHERE ? AND w.channel = ? AND {UNSUMMARIZED}"
    " ORDER BY 1, 2"
)


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
        limit = through_row if through_row is not None else 2**62
        rows = await self._read(
            f"SELECT {_HISTORY_COLUMNS}{_HISTORY_FROM} ORDER BY m.id", (channel, limit)
        )
        return [_stored(r) for r in rows]

    async def recall(self, channel: str, through_row: int, wanted: Recall) -> Recalled:
        """`history(channel, through_row)` and what `wanted` asks for, in one statement: one
        round trip, and one snapshot of the database."""
        user_key, scope = wanted.notes_of or ("", "")
        rows = await self._read(
            _RECALL,
            (channel, through_row, wanted.notes_of is not None, user_key, scope)
            + (wanted.summary, channel) * 2,
        )
        recalled = Recalled([])
        for r in rows:
            if r[0] == _HISTORY_ROW:
                recalled.history.append(_stored(r[2:]))
            elif r[0] == _NOTE_ROW:
                recalled.notes.append(Note(int(r[2]), str(r[3])))
            elif r[0] == _SUMMARY_ROW:
                recalled.summary = summary_of(r[2:7])
            else:
                recalled.unsummarized = True
        return recalled

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
