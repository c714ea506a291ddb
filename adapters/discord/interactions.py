"""What users do to the bot's answers besides asking: ⏹ stops an answer being written, 🔁
writes it again in place, and slash commands run as the core's `!` commands.

The bot's recent messages are remembered with the reply that wrote them, so a reaction finds
its answer without a REST call; an answer from before a restart is fetched instead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Protocol

import aiohttp
import discord

from adapters.discord.access import PLATFORM, Access, may_steer, reaction_kind
from adapters.discord.incoming import Reader
from adapters.discord.reply import InteractionReply, MessageReply, Outbox
from bot.bounded import SizedCache, text_bytes
from bot.commands.parse import Command, may_run, parse_command
from bot.events import ChatEvent, Incoming, Outcome, RegenerateRequested, StopRequested
from bot.settings import BotSettings
from bot.texts import COMMAND_NOT_ALLOWED, COMMANDS_PAUSED


class InteractionHost(Outbox, Protocol):
    """What reactions and slash commands need of their adapter (DiscordAdapter is one)."""

    access: Access
    reader: Reader
    bot_settings: BotSettings

    @property
    def client(self) -> discord.Client | None: ...

    async def deliver(self, event: ChatEvent) -> Outcome | None: ...


# Discord answers an interaction within 3 s or shows "The application did not respond".
DEFER_AFTER_S = 2.0
# Bot message id → its reply, for ⏹/🔁 reactions: the recent ones, by what they hold (a reply
# keeps the question's text, attachments included, and the answer's).
REMEMBERED_REPLIES_BYTES = 8 * 1024 * 1024
REPLY_OVERHEAD = 2048  # a MessageReply and its parts besides the texts


def reply_bytes(reply: MessageReply) -> int:
    """What remembering `reply` holds in memory."""
    message = reply.message
    texts = (message.text, message.author_name, reply.shown)
    return REPLY_OVERHEAD + sum(text_bytes(text) for text in texts)


class Interactions:
    """Reactions on the bot's answers and slash commands, turned into the core's events."""

    def __init__(self, adapter: InteractionHost) -> None:
        self._adapter = adapter
        self.replies: SizedCache[int, MessageReply] = SizedCache(
            REMEMBERED_REPLIES_BYTES, lambda _, reply: reply_bytes(reply)
        )
        self._commands: dict[str, InteractionReply] = {}  # Incoming.message_id → its answer
        self._regenerating: dict[str, list[int]] = {}  # question → the messages to reuse

    # -- the replies the core opens -------------------------------------------------------------

    def reply_to(self, message: Incoming) -> InteractionReply | MessageReply:
        """A slash command's own answer, or a new reply (in place of an answer regenerated)."""
        command = self._commands.get(message.message_id)
        if command is not None:
            return command
        reuse = self._regenerating.pop(message.message_id, None)
        return MessageReply(self._adapter, message, reuse=reuse)

    def command_reply(self, message: Incoming) -> InteractionReply | None:
        return self._commands.get(message.message_id)

    def sent(self, message_id: int, reply: MessageReply) -> None:
        self.replies.put(message_id, reply)

    def deleted(self, message_id: int) -> None:
        self.replies.pop(message_id)

    # -- reactions ------------------------------------------------------------------------------

    async def on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        adapter = self._adapter
        client = adapter.client
        me = client.user if client is not None else None
        kind = reaction_kind(str(payload.emoji))
        if client is None or me is None or kind is None or payload.user_id == me.id:
            return
        reply = self.replies.get(payload.message_id)
        if kind == "stop":
            # Only an answer still being written can be stopped.
            if reply is None or reply.closed:
                return
            if may_steer(payload.user_id, int(reply.message.author_id), adapter.access):
                await adapter.deliver(
                    StopRequested(PLATFORM, reply.message.channel_id, reply.message.message_id)
                )
            return
        if payload.message_author_id not in (None, me.id):
            return
        channel = client.get_channel(payload.channel_id) or adapter.channel(
            payload.channel_id, payload.guild_id
        )
        if not await adapter.reader.allows(client, payload.user_id, channel, payload.guild_id):
            return  # where they may not ask (now), they get no new answer either
        original = reply.message if reply is not None else await self._asked(payload, me)
        if original is None or not may_steer(
            payload.user_id, int(original.author_id), adapter.access
        ):
            return
        if reply is not None and not reply.done.is_set():
            # Still answering, or its final text still being retried: regenerating now
            # would race the old answer's edits over the new one.
            return
        # The new answer takes over the old answer's messages (edited in place).
        reuse = reply.message_ids if reply is not None else [payload.message_id]
        self._regenerating[original.message_id] = reuse
        request = RegenerateRequested(
            original, str(payload.user_id), adapter.access.is_admin(payload.user_id)
        )
        try:
            await adapter.deliver(request)
        finally:  # the core opened its reply meanwhile, or it had nothing to regenerate
            self._regenerating.pop(original.message_id, None)

    async def _asked(
        self, payload: discord.RawReactionActionEvent, me: discord.ClientUser
    ) -> Incoming | None:
        """The question behind one of our replies from before a restart: our reply
        references it, so fetch both."""
        channel = self._adapter.channel(payload.channel_id, payload.guild_id)
        try:
            ours = await channel.fetch_message(payload.message_id)
            if ours.author.id != me.id or ours.reference is None or not ours.reference.message_id:
                return None
            asked = await channel.fetch_message(ours.reference.message_id)
        except (discord.HTTPException, aiohttp.ClientError, OSError):
            return None
        # Regenerated now: the question's own time would count against the catch-up window.
        return replace(await self._adapter.reader.incoming(asked, me), received_at=time.time())

    # -- slash commands -------------------------------------------------------------------------

    async def run_command(
        self, interaction: discord.Interaction, text: str, ephemeral: bool
    ) -> None:
        """A slash command, answered through the core as the equivalent `!` command."""
        adapter = self._adapter
        user = interaction.user
        channel_id = interaction.channel_id
        reply = InteractionReply(interaction, ephemeral)
        guild_id = interaction.guild_id
        if channel_id is None or not await adapter.reader.allows(
            interaction.client, user.id, interaction.channel, guild_id
        ):
            reply.ephemeral = True
            await reply.finish(COMMAND_NOT_ALLOWED)
            return
        incoming = Incoming(
            platform=PLATFORM,
            channel_id=str(channel_id),
            message_id=str(interaction.id),
            author_id=str(user.id),
            author_name=user.display_name,
            text=text,
            is_direct=guild_id is None,
            server_id=str(guild_id) if guild_id else None,
            is_admin=adapter.access.is_admin(user.id),
        )
        command = parse_command(text)
        if isinstance(command, Command) and not may_run(
            command, adapter.bot_settings.admin_commands, incoming.is_direct, incoming.is_admin
        ):
            reply.ephemeral = True  # "only an admin can": for the asker's eyes alone
        self._commands[incoming.message_id] = reply
        try:
            handled = asyncio.ensure_future(adapter.deliver(incoming))
            done, _ = await asyncio.wait({handled}, timeout=DEFER_AFTER_S)
            if not done:
                await reply.defer()
            await handled
        finally:
            self._commands.pop(incoming.message_id, None)
        if not reply.answered:  # the daemon is stopping, or ignored it
            await reply.finish(COMMANDS_PAUSED)
