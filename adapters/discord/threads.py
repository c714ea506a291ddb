"""auto_thread: in the channels listed in `[discord] auto_thread_channels`, or turned on with
`!autothread on` (which the core keeps, and `!autothread off` overrides the list), a mention
opens a thread from the message and is answered there; every message in a thread the bot
opened in such a channel is then for the bot, no mention needed. A thread is its own
conversation."""

from __future__ import annotations

from collections.abc import Container
from typing import Protocol

import aiohttp
import discord
import structlog

from bot.commands.parse import PREFIX
from bot.settings import DiscordSettings

log = structlog.get_logger(__name__)

NAME_CHARS = 80  # Discord allows 100


class ThreadsSource(Protocol):
    """What AutoThreadChannels reads of the adapter: its config (as of the last reload) and
    discord.py's client, whose cache knows the threads."""

    @property
    def settings(self) -> DiscordSettings: ...

    @property
    def client(self) -> discord.Client | None: ...


class AutoThreadChannels:
    """The channels where a mention opens a thread: each channel's `!autothread` choice (the
    core's, bot.events.ThreadChoices), else the config's list as of the last reload."""

    def __init__(self, adapter: ThreadsSource) -> None:
        self._adapter = adapter
        self._chosen: dict[int, bool] = {}

    def __contains__(self, channel_id: object) -> bool:
        if isinstance(channel_id, int) and channel_id in self._chosen:
            return self._chosen[channel_id]
        return channel_id in set(self._adapter.settings.auto_thread_channels)

    def on(self, channel_id: str) -> bool:
        return channel_id.isdecimal() and int(channel_id) in self

    def choose(self, channel_id: str, on: bool | None) -> None:
        if not channel_id.isdecimal():
            return
        if on is None:
            self._chosen.pop(int(channel_id), None)
        else:
            self._chosen[int(channel_id)] = on

    def is_thread(self, channel_id: str) -> bool:
        client = self._adapter.client
        if client is None or not channel_id.isdecimal():
            return False
        return isinstance(client.get_channel(int(channel_id)), discord.Thread)


def in_own_thread(
    message: discord.Message, me: discord.ClientUser, channels: Container[int]
) -> bool:
    """A thread the bot opened in an auto_thread channel: every message there is for it."""
    channel = message.channel
    return (
        isinstance(channel, discord.Thread)
        and channel.parent_id in channels
        and channel.owner_id == me.id
    )


def opens_thread(message: discord.Message, channels: Container[int]) -> bool:
    """Whether a message said to the bot opens a thread: in a server's auto_thread channel."""
    channel = message.channel
    return (
        message.guild is not None
        and not isinstance(channel, discord.Thread)
        and channel.id in channels
    )


async def open_thread(message: discord.Message, text: str) -> int | None:
    """A thread from `message`, named after its first words; None for a command (answered
    in place) or when Discord refuses (then it is answered in the channel, as without
    auto_thread)."""
    if text.lstrip().startswith(PREFIX):
        return None
    name = " ".join(text.split())[:NAME_CHARS] or "hearthbot"
    try:
        thread = await message.create_thread(name=name)
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        log.warning("discord: could not open a thread", error=str(exc))
        return None
    return thread.id
