"""Replied-to Discord messages, for the core's reply quotes (bot.events.QuoteSource).

The core stores a reply's reference only and reads the quoted message when it builds a prompt:
from the messages seen lately (Discord sends the replied-to message with each reply), or by
REST. Deletions and edits keep what is kept here true, so a deleted message does not come
back through a reply to it.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import discord
import structlog

from adapters.common.recent import RecentMessages
from adapters.discord.text import without_footnote
from bot.events import Quoted

log = structlog.get_logger(__name__)


class Quotes:
    """The replied-to messages seen lately, and the REST look-up of others."""

    def __init__(self, plain: Callable[[discord.Message, discord.ClientUser], str]) -> None:
        self.recent = RecentMessages()
        self._plain = plain  # a message's text as the model reads it

    def saw(self, message: discord.Message, me: discord.ClientUser) -> None:
        text = self._plain(message, me)
        if message.author.id == me.id:  # our answer as the core stored it
            text = without_footnote(text)
        reference = message.reference.message_id if message.reference else None
        parent = str(reference) if reference else None  # a reply chain goes on there
        author = message.author
        sent_at = message.created_at.timestamp()
        seen = Quoted(str(author.id), author.display_name, text, parent, sent_at)
        self.recent.saw(str(message.id), seen)

    def edited(self, message: discord.Message, me: discord.ClientUser) -> None:
        """A message changed: kept as it is now, if it is kept at all."""
        if str(message.id) in self.recent:
            self.saw(message, me)

    def deleted(self, message_id: int) -> None:
        self.recent.deleted(str(message_id))

    async def fetch(
        self, client: discord.Client, channel_id: str, message_id: str
    ) -> Quoted | None:
        me = client.user
        if message_id not in self.recent and me is not None:
            channel = client.get_partial_messageable(int(channel_id))
            try:
                message = await channel.fetch_message(int(message_id))
            except (discord.NotFound, discord.Forbidden):
                self.recent.saw(message_id, None)  # gone, or never ours to read
                return None
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                log.info("discord: could not read a replied-to message", error=str(exc))
                return None
            self.saw(message, me)
        return self.recent.get(message_id)
