"""What was said while hearthbot was away from Discord.

Discord replays missed events only to a RESUMEd session. After a restart of hearthbot, or a
gap too long to resume, the new session starts from now: a question asked meanwhile would
be lost. So the adapter remembers the newest message it saw in each channel
(`<data_dir>/discord/state.json`), and after each fresh session reads each channel's history
from there. What it finds goes through the normal path (addressed? allowed?) unless it is
older than `[discord] catch_up_window_s` or already has a reply from the bot.

Messages in a channel the bot had never seen a message in (a first DM during the gap) are
out of reach: there is nowhere to start reading.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import discord
import structlog

from adapters.state_file import read_json, write_private

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"
MAX_CHANNELS = 50  # the most recently active channels are read; each a REST call or two
PER_CHANNEL = 100  # messages read per channel at most


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message from a channel's history, as far as deciding goes."""

    id: int
    age_s: float
    author_is_me: bool
    replies_to: int | None  # the message it replies to, if any


def to_answer(history: Iterable[Fetched], window_s: float) -> list[int]:
    """Ids of the messages worth passing on, oldest first: young enough and not answered by
    the bot already (its reply is newer, so it is in the same history)."""
    messages = sorted(history, key=lambda m: m.id)
    answered = {m.replies_to for m in messages if m.author_is_me and m.replies_to is not None}
    return [
        m.id
        for m in messages
        if not m.author_is_me and m.age_s <= window_s and m.id not in answered
    ]


@dataclass(slots=True)
class SeenChannels:
    """The newest message id seen per channel (with its server, to read it back), for one
    bot account."""

    path: Path
    user_id: int
    newest: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, folder: Path, user_id: int) -> SeenChannels:
        path = folder / STATE_FILE
        data = read_json(path)
        seen = cls(path, user_id)
        # Another bot account sees other channels: it starts afresh.
        if data is None or data.get("user_id") != user_id:
            return seen
        channels = data.get("channels")
        for key, value in (channels if isinstance(channels, dict) else {}).items():
            try:
                seen.newest[int(key)] = (int(value[0]), int(value[1]) if value[1] else None)
            except (TypeError, ValueError, IndexError):
                continue  # a damaged entry costs that channel's catch-up, nothing more
        return seen

    def saw(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        known = self.newest.get(channel_id)
        if known is None or message_id > known[0]:
            self.newest[channel_id] = (message_id, guild_id)
            self.dirty = True

    def to_read(self) -> list[tuple[int, int, int | None]]:
        """(channel, read after this message, server) for the most recently active."""
        ranked = sorted(self.newest.items(), key=lambda item: item[1][0], reverse=True)
        return [(channel, after, guild) for channel, (after, guild) in ranked[:MAX_CHANNELS]]

    def save(self) -> None:
        if not self.dirty:
            return
        # Snowflakes grow with time: the newest channels are the ones worth keeping.
        self.newest = dict(sorted(self.newest.items(), key=lambda i: i[1][0], reverse=True)[:1000])
        channels = {str(c): [m, g] for c, (m, g) in self.newest.items()}
        write_private(self.path, {"user_id": self.user_id, "channels": channels})
        self.dirty = False


async def missed(
    client: discord.Client, to_read: list[tuple[int, int, int | None]], window_s: float
) -> AsyncIterator[discord.Message]:
    """The messages worth passing on from each channel's history after where it was left."""
    me = client.user
    for channel_id, after, guild_id in to_read:
        channel = client.get_channel(channel_id) or client.get_partial_messageable(
            channel_id, guild_id=guild_id
        )
        if not isinstance(channel, discord.abc.Messageable):
            continue  # a voice or category channel id: nothing to read
        try:
            history = [
                m
                async for m in channel.history(
                    after=discord.Object(after), limit=PER_CHANNEL, oldest_first=True
                )
            ]
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.info("discord: could not read a channel back", channel=channel_id, error=str(exc))
            continue
        now = discord.utils.utcnow()
        wanted = set(
            to_answer(
                (
                    Fetched(
                        m.id,
                        (now - m.created_at).total_seconds(),
                        me is not None and m.author.id == me.id,
                        m.reference.message_id if m.reference else None,
                    )
                    for m in history
                ),
                window_s,
            )
        )
        for message in history:
            if message.id in wanted:
                yield message
