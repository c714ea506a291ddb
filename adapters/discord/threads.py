"""auto_thread: in the channels listed in `[discord] auto_thread_channels` a mention opens a
thread from the message and is answered there; every message in a thread the bot opened in
such a channel is then for the bot, no mention needed. A thread is its own conversation."""

from __future__ import annotations

from collections.abc import Container

import aiohttp
import discord
import structlog

from bot.commands.parse import PREFIX

log = structlog.get_logger(__name__)

NAME_CHARS = 80  # Discord allows 100


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
