"""discord.py's client as hearthbot uses it: where Discord is, which gateway events it asks
for, and those events handed to the adapter. Close codes that reconnecting cannot fix are
turned into one line for the user here too."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

import aiohttp
import discord
import structlog
import yarl

from adapters.discord.catch_up import CatchUp
from adapters.discord.interactions import Interactions
from adapters.discord.reply import NONE
from adapters.discord.slash import SlashCommands

log = structlog.get_logger(__name__)

# Gateway close codes after which reconnecting cannot help, and what the user should do.
TOKEN_REJECTED = (
    "Discord rejected the bot token (HTTP 401 / close code 4004): set a valid [discord] token "
    "(HEARTHBOT_DISCORD__TOKEN or the discord__token credential)."
)
INTENT_MISSING = (
    "Discord refused the Message Content intent (close code 4014): enable 'Message Content "
    "Intent' under Bot → Privileged Gateway Intents in the Discord Developer Portal."
)
FATAL_CLOSE = {
    4004: TOKEN_REJECTED,
    4010: "Discord closed the gateway: invalid shard (close code 4010).",
    4011: "Discord closed the gateway: this bot needs sharding (close code 4011).",
    4012: "Discord closed the gateway: invalid API version (close code 4012); check gateway_url.",
    4013: "Discord closed the gateway: invalid intents (close code 4013).",
    4014: INTENT_MISSING,
}
# hearthbot never joins voice: don't warn at every start that voice libraries are missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


def point_at(api_base: str, gateway_url: str) -> None:
    """The one place that tells discord.py where Discord is: the real API, a REST/gateway
    proxy (as large bots run), or a test's fake. discord.py reads these class attributes."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def intents() -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True  # channels and threads, for access checks and names
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True  # privileged: enabled in the Developer Portal
    wanted.guild_reactions = True  # ⏹ and 🔁
    wanted.dm_reactions = True
    return wanted


class GatewayHost(Protocol):
    """Where the client's gateway events go (DiscordAdapter is one)."""

    interactions: Interactions
    catch_up: CatchUp
    connected: bool
    persona_names: list[str]

    def failed(self, error: BaseException) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None: ...

    async def read_back_missed(self, client: HearthClient) -> None: ...

    async def on_message(self, message: discord.Message) -> None: ...

    async def on_edit(self, message: discord.Message, data: Any) -> None: ...

    async def on_delete(self, channel_id: int, message_ids: Iterable[int]) -> None: ...


class HearthClient(discord.Client):
    """discord.py's client with its events routed to the adapter."""

    def __init__(
        self, adapter: GatewayHost, guild_ready_timeout: float, reidentify_delay_s: float
    ) -> None:
        super().__init__(
            intents=intents(),
            allowed_mentions=NONE,  # the default for everything; each send passes it too
            max_messages=None,  # no message cache: raw events carry what we need
            chunk_guilds_at_startup=False,
            guild_ready_timeout=guild_ready_timeout,
        )
        self.adapter = adapter
        self.reidentify_delay_s = reidentify_delay_s
        self.tree = SlashCommands(
            self, adapter.interactions.run_command, adapter.persona_names, adapter.failed
        )

    async def sync_commands(self, guild_ids: list[int]) -> None:
        """Register the slash commands: in the given guilds at once, or everywhere (Discord
        takes up to an hour to show global ones)."""
        try:
            if guild_ids:
                for guild_id in guild_ids:
                    guild = discord.Object(guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
            log.info("discord slash commands synced", guilds=guild_ids or "all")
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord: could not sync slash commands", error=str(exc))

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:  # discord.py waits 5 s before a fresh IDENTIFY (Discord's rate limit)
            await asyncio.sleep(self.reidentify_delay_s)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        log.error("discord event handler failed", handler=event_method, exc_info=error)
        if error is not None:
            self.adapter.failed(error)

    async def on_connect(self) -> None:
        # discord.py dispatches "connect" on READY: a fresh session, nothing replayed. Where
        # each channel was left is taken now, before this session's first message.
        self.adapter.connected = True
        self.adapter.catch_up.session_started(self)

    async def on_resumed(self) -> None:
        self.adapter.connected = True
        log.info("discord gateway resumed")

    async def on_disconnect(self) -> None:
        self.adapter.connected = False

    async def on_ready(self) -> None:
        # After every READY, once the guilds are in (their roles decide what is addressed).
        log.info("discord ready", user_id=self.user.id if self.user else None)
        self.adapter.spawn(self.adapter.read_back_missed(self), "discord-read-back")

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.adapter.on_edit(payload.message, payload.data)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.adapter.on_delete(payload.channel_id, [payload.message_id])

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self.adapter.on_delete(payload.channel_id, sorted(payload.message_ids))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.adapter.interactions.on_reaction(payload)
