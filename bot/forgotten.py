"""Who had the bot forget them, and when: what the platform still has of their earlier
messages stays out of every prompt.

`!forget` deletes a person's stored messages, but the platform keeps its own copies, and a
reply chain reads links the bot never stored from there (bot.prompt.quotes). So the store
keeps one row per person who had the bot forget them: their user key (platform and platform
id, never a display name) and the time of their latest `!forget` — no text. A link read from
the platform whose author has a row, and that was written before that time, is treated as
gone. `!forget` covers the person's messages everywhere on their platform, and so does the
row. It stays as long as the database (the platform keeps the messages): retention, `!reset`
and usage purges leave it, and a later `!forget` moves it forward (it covers all an earlier
one did).
"""

from __future__ import annotations

import aiosqlite

from bot.database import Database
from bot.events import Quoted, user_key

# Platform clocks (a message's time) and ours (the forget's) may differ a little: a message
# sent just before the `!forget` must not pass as sent after it.
CLOCK_SLACK_S = 2.0


def hidden(forgotten_before: float | None, sent_at: float | None) -> bool:
    """Whether a message sent at `sent_at` (None: unknown) stays out of prompts when its
    author had the bot forget them up to `forgotten_before` (None: never)."""
    if forgotten_before is None:
        return False
    return sent_at is None or sent_at < forgotten_before


async def mark_forgotten(db: aiosqlite.Connection, who: str, now: float) -> None:
    """In `!forget`'s transaction: `who`'s messages written until now are forgotten."""
    await db.execute(
        "INSERT INTO forgotten (user_key, before) VALUES (?, ?) ON CONFLICT (user_key)"
        " DO UPDATE SET before = max(before, excluded.before)",
        (who, now + CLOCK_SLACK_S),
    )


class ForgottenStore(Database):
    """The forgotten table, part of bot.store.Store (one connection, one write path)."""

    async def forgotten_before(self, who: str) -> float | None:
        """Until when `who` had the bot forget them; None if they never did."""
        rows = await self._read("SELECT before FROM forgotten WHERE user_key = ?", (who,))
        return float(rows[0][0]) if rows else None

    async def is_forgotten(self, platform: str, quoted: Quoted) -> float | None:
        """The forget time hiding `quoted`, a message read from `platform`; None if shown."""
        before = await self.forgotten_before(user_key(platform, quoted.author_id))
        return before if hidden(before, quoted.sent_at) else None
