"""Discord messages as the core's events: whether a message is for the bot, its channel and
thread parent (for access), and its text as the model should read it (the bot's mention
removed, other mentions as names, text attachments read up to a cap per message, others
named)."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import aiohttp
import discord
import structlog

from adapters.common.download import read_capped
from adapters.discord.access import PLATFORM, Access, Addressing
from adapters.discord.membership import Membership
from adapters.discord.quotes import Quotes
from adapters.discord.text import (
    attachment_named,
    attachment_read,
    decode_text,
    is_image_attachment,
    is_text_attachment,
    plain_text,
    with_attachments,
)
from bot.events import Fetched, Incoming
from bot.triggers import names_any

log = structlog.get_logger(__name__)

MAX_ATTACHMENTS = 10
UNREAD_KEPT = 256  # messages not said to the bot whose files the core may still ask for
MESSAGE_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class Reader:
    """Reads Discord messages for the core: addressed or not, where, and what they say."""

    def __init__(self, access: Access, attachment_max_kb: int) -> None:
        self.access = access
        self.attachment_max_kb = attachment_max_kb
        self.members = Membership()  # for DMs under allowed_guilds
        self._http: aiohttp.ClientSession | None = None  # for reading attachments
        self._parents: dict[int, int | None] = {}  # thread → parent, for uncached threads
        self.quotes = Quotes(self.plain)
        # Messages passed on with their files only named: id → (message, the bot then).
        self._unread: OrderedDict[str, tuple[discord.Message, discord.ClientUser]] = OrderedDict()
        # Messages with pictures: id → each picture's (url, declared size), for the core to
        # download while the model sees images (bot.events.ReadsImages).
        self._pictures: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def addressing(self, message: discord.Message, me: discord.ClientUser) -> Addressing:
        resolved = message.reference.resolved if message.reference else None
        guild = message.guild
        bot_role = guild.self_role.id if guild is not None and guild.self_role else None
        return Addressing(
            is_own=message.author.id == me.id,
            author_is_bot=message.author.bot,
            is_webhook=message.webhook_id is not None,
            is_system=message.type not in MESSAGE_TYPES,
            is_dm=guild is None,
            mentions_bot=me.id in message.raw_mentions
            or (bot_role is not None and bot_role in message.raw_role_mentions),
            replies_to_bot=isinstance(resolved, discord.Message) and resolved.author.id == me.id,
        )

    async def allows(
        self, client: discord.Client, user_id: int, channel: Any, guild_id: int | None
    ) -> bool:
        """Whether `user_id` may ask the bot in `channel`: the access lists, by ID (for a
        thread its parent's entry counts too), and for a DM under `allowed_guilds`,
        membership of one of those servers."""
        channels = await self.channel_and_parent(client, channel, guild_id)
        member = False
        if guild_id is None and self.access.needs_membership(user_id):
            member = await self.members.in_any(client, user_id, self.access.allowed_guilds)
        return self.access.allows(user_id, guild_id, channels, in_allowed_guild=member)

    async def channel_and_parent(
        self, client: discord.Client, channel: Any, guild_id: int | None
    ) -> tuple[int, ...]:
        """The channel and, for a thread, its parent: a thread of an allowed channel is
        allowed. A thread missing from discord.py's cache is looked up once."""
        if channel is None:
            return ()
        if isinstance(channel, discord.Thread):
            return (channel.id, channel.parent_id)
        if guild_id is None or not self.access.allowed_channels:
            return (channel.id,)
        if channel.id not in self._parents:
            try:
                fetched = await client.fetch_channel(channel.id)
                self._parents[channel.id] = getattr(fetched, "parent_id", None)
            except (discord.HTTPException, aiohttp.ClientError, OSError):
                return (channel.id,)
        parent = self._parents.get(channel.id)
        return (channel.id,) if parent is None else (channel.id, parent)

    async def incoming(
        self,
        message: discord.Message,
        me: discord.ClientUser,
        addressed: bool = True,
        thread_id: int | None = None,
    ) -> Incoming:
        """`addressed`: a mention, a reply to the bot or a DM (else the channel's trigger
        mode decides, and most such messages are not for the bot: their attachments are
        named, never downloaded); whether the bot's name is in it is found here.
        `thread_id`: a thread opened from it (auto_thread), where it is answered."""
        text = await self.text(message, me) if addressed else self.named_only(message, me)
        if not addressed and message.attachments:  # read if the core takes it after all
            self._unread[str(message.id)] = (message, me)
            while len(self._unread) > UNREAD_KEPT:
                self._unread.popitem(last=False)
        resolved = message.reference.resolved if message.reference else None
        if isinstance(resolved, discord.Message):  # read by the core when it builds the prompt
            self.quotes.saw(resolved, me)
        pictures = [
            a
            for a in message.attachments[:MAX_ATTACHMENTS]
            if is_image_attachment(a.filename, a.content_type)
        ]
        if pictures:
            self._pictures[str(message.id)] = [(a.url, a.size) for a in pictures]
            while len(self._pictures) > UNREAD_KEPT:
                self._pictures.popitem(last=False)
        guild_id = message.guild.id if message.guild else None
        return Incoming(
            platform=PLATFORM,
            channel_id=str(thread_id or message.channel.id),  # a thread is its own channel
            message_id=str(message.id),
            author_id=str(message.author.id),
            author_name=message.author.display_name,
            text=text,
            is_direct=guild_id is None,
            reply_to_id=str(message.reference.message_id)
            if message.reference and message.reference.message_id
            else None,
            server_id=str(guild_id) if guild_id else None,
            is_admin=self.access.is_admin(message.author.id),
            addressed=addressed,
            named=names_any(text, self.names(message, me)),
            received_at=message.created_at.timestamp(),  # a message read back is older
            images=tuple(a.filename for a in pictures),
        )

    @staticmethod
    def names(message: discord.Message, me: discord.ClientUser) -> list[str]:
        """The bot's names where the message was sent: its user name, global display name
        and, in a server, its nickname there."""
        names = [me.name, me.display_name]
        guild = message.guild
        if guild is not None and guild.me is not None:
            names.append(guild.me.display_name)
        return names

    def plain(self, message: discord.Message, me: discord.ClientUser) -> str:
        guild = message.guild
        return plain_text(
            message.content,
            me.id,
            users={user.id: user.display_name for user in message.mentions},
            roles={role.id: role.name for role in message.role_mentions},
            channels={c.id: c.name for c in message.channel_mentions},
            bot_role_id=guild.self_role.id if guild is not None and guild.self_role else None,
        )

    async def text(self, message: discord.Message, me: discord.ClientUser) -> str:
        """The message's text, then its attachments: text files are read until, all together,
        attachment_max_kb is read (ten 256 KB files are not 2.5 MB to hold and refuse)."""
        left = self.attachment_max_kb * 1024
        parts = []
        for attachment in message.attachments[:MAX_ATTACHMENTS]:
            part, read = await self._attachment(attachment, left)
            parts.append(part)
            left -= read
        return with_attachments(self.plain(message, me), parts)

    async def read_attachments(self, incoming: Incoming) -> Incoming:
        """A message passed on with its files named, now taken by its channel's trigger mode
        (bot.events.ReadsAttachments): its text files read as for one said to the bot."""
        found = self._unread.pop(incoming.message_id, None)
        if found is None:
            return incoming
        try:
            return dataclasses.replace(incoming, text=await self.text(*found))
        except (discord.DiscordException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord: could not read attachments", error=str(exc))
            return incoming

    async def read_image(self, message: Incoming, index: int, max_bytes: int) -> Fetched:
        """A picture's bytes (bot.events.ImageReader): one Discord says is larger than the
        cap is not downloaded."""
        found = self._pictures.get(message.message_id)
        if found is None or not 0 <= index < len(found):
            return Fetched(None)
        url, size = found[index]
        if size > max_bytes:
            return Fetched(None, over_cap=True)
        got = await self._download(url, max_bytes, whole=True)
        if got is None:
            return Fetched(None)
        body, over = got
        return Fetched(None, over_cap=True) if over else Fetched(body)

    def named_only(self, message: discord.Message, me: discord.ClientUser) -> str:
        """The message's text, its attachments only named."""
        named = [
            attachment_named(a.filename, a.content_type, a.size)
            for a in message.attachments[:MAX_ATTACHMENTS]
        ]
        return with_attachments(self.plain(message, me), named)

    async def _attachment(self, attachment: discord.Attachment, left: int) -> tuple[str, int]:
        """A text file (a long paste becomes message.txt) read up to `left` bytes, or only
        named (anything else, or nothing left to read); and the bytes read."""
        if left > 0 and is_text_attachment(attachment.filename, attachment.content_type):
            got = await self._download(attachment.url, left)
            if got is not None:
                body, truncated = got
                text = decode_text(body)
                if text is not None:
                    cut_kb = self.attachment_max_kb if truncated else None
                    return attachment_read(attachment.filename, text, cut_kb), len(body)
        named = attachment_named(attachment.filename, attachment.content_type, attachment.size)
        return named, 0

    async def _download(self, url: str, cap: int, whole: bool = False) -> tuple[bytes, bool] | None:
        """Up to `cap` bytes of an attachment and whether there was more (read_capped)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            async with self._http.get(url) as response:
                if response.status != 200:
                    return None
                return await read_capped(response, cap, whole)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("discord attachment unreadable", error=str(exc))
            return None
