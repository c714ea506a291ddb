"""Discord: mentions, replies to the bot and DMs in; streamed replies, reactions and slash
commands out. A translator only: it never touches the engine or the store.

discord.py runs in a background task. `start` returns at once (a Discord outage must not
hold up the daemon); a dropped gateway is resumed by discord.py, a failed login is retried
with backoff, and only a permanent refusal (a bad token, the Message Content intent not
enabled) resolves `failure` with one line for the CLI to print.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable
from dataclasses import replace
from typing import Any

import aiohttp
import discord
import structlog
import yarl

from adapters.common.backoff import Backoff
from adapters.common.failure import ReportsFailure
from adapters.common.tasks import BackgroundTasks
from adapters.discord.access import PLATFORM, Access, addressed, may_steer, reaction_kind
from adapters.discord.catch_up import CatchUp
from adapters.discord.incoming import Reader
from adapters.discord.reply import NONE, InteractionReply, MessageReply
from adapters.discord.slash import SlashCommands
from adapters.discord.text import LIMIT, REFUSED_EMOJI
from bot.commands.parse import Command, may_run, parse_command
from bot.events import (
    Capabilities,
    ChatEvent,
    Incoming,
    MessageDeleted,
    MessageEdited,
    RegenerateRequested,
    Sink,
    StopRequested,
)
from bot.personas import load_personas
from bot.settings import BotSettings, DiscordSettings
from bot.texts import COMMAND_NOT_ALLOWED, COMMANDS_PAUSED

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
# Discord answers an interaction within 3 s or shows "The application did not respond".
DEFER_AFTER_S = 2.0
REMEMBERED_REPLIES = 2000  # bot message id → its reply, for ⏹/🔁 reactions
RETRY_MAX_S = 300.0
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


class HearthClient(discord.Client):
    """discord.py's client with its events routed to the adapter."""

    def __init__(
        self, adapter: DiscordAdapter, guild_ready_timeout: float, reidentify_delay_s: float
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
        self.tree = SlashCommands(self, adapter.run_command, adapter.persona_names, adapter.failed)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if not initial:  # discord.py waits 5 s before a fresh IDENTIFY (Discord's rate limit)
            await asyncio.sleep(self.reidentify_delay_s)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        log.error("discord event handler failed", event=event_method, exc_info=error)
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
        await self.adapter.on_reaction(payload)


class DiscordAdapter(ReportsFailure):
    name = PLATFORM
    capabilities = Capabilities(can_edit=True, max_message_length=LIMIT, formatting="markdown")

    def __init__(
        self,
        settings: DiscordSettings,
        bot: BotSettings,
        *,
        guild_ready_timeout: float = 2.0,
        reidentify_delay_s: float = 5.0,
        retry_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.bot_settings = bot
        self.edit_interval_s = settings.edit_interval_s
        self.access = Access.from_settings(settings, bot)
        self.reader = Reader(self.access, settings.attachment_max_kb)
        self.persona_names = load_personas(bot.personas_dir).names()
        self.client: HearthClient | None = None
        self.connected = False
        # Exceptions that discord.py would swallow into on_error (tests fail on them).
        self.errors: deque[BaseException] = deque(maxlen=100)
        self._guild_ready_timeout = guild_ready_timeout
        self._reidentify_delay_s = reidentify_delay_s
        self._retry_s = retry_s
        self._sink: Sink | None = None
        self._runner: asyncio.Task[None] | None = None
        self._logged_in = asyncio.Event()
        self._stopping = False
        self._tasks = BackgroundTasks(PLATFORM)
        self._replies: OrderedDict[int, MessageReply] = OrderedDict()
        self._interactions: dict[str, InteractionReply] = {}
        self._regenerating: dict[str, list[int]] = {}
        self._forbidden: set[int] = set()
        self.catch_up = CatchUp(
            bot.data_dir / "discord", settings.catch_up_window_s, self.on_message, self.failed
        )

    # -- the Adapter protocol -------------------------------------------------------------------

    def update_settings(self, settings: DiscordSettings, bot: BotSettings) -> None:
        """SIGHUP: new access lists (`[bot] admins` too), edit interval, attachment cap and
        persona names, without reconnecting (a new token or endpoint needs a restart)."""
        names = load_personas(bot.personas_dir).names()  # can fail: before anything changes
        self.settings = settings
        self.bot_settings = bot
        self.edit_interval_s = settings.edit_interval_s
        self.access = Access.from_settings(settings, bot)
        self.reader.access = self.access
        self.reader._attachment_max_kb = settings.attachment_max_kb
        self.catch_up.window_s = settings.catch_up_window_s
        self.persona_names[:] = names  # the list slash-command autocomplete reads

    async def start(self, sink: Sink) -> None:
        if self.settings.token is None:
            raise ValueError("[discord] token is not set")
        self._sink = sink
        self._stopping = False
        self._tasks.open()
        point_at(self.settings.api_base, self.settings.gateway_url)
        _ = self.failure
        self._runner = asyncio.create_task(self._run(), name="discord-client")
        self.spawn(self.catch_up.save_often(), "discord-save-positions")

    async def stop(self) -> None:
        self._stopping = True
        await self._tasks.stop()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        # Let the event handlers discord.py scheduled while closing run (they see _stopping and
        # return at once), rather than leave them to die unstarted with the loop.
        handlers = [
            task
            for task in asyncio.all_tasks()
            if task.get_name().startswith("discord.py: ") and task is not asyncio.current_task()
        ]
        if handlers:
            await asyncio.wait(handlers, timeout=2)
        await self.reader.close()
        await self.catch_up.save()
        self.connected = False

    def is_connected(self) -> bool:
        return self.connected

    def open_reply(self, message: Incoming) -> InteractionReply | MessageReply:
        interaction = self._interactions.get(message.message_id)
        if interaction is not None:
            return interaction
        return MessageReply(self, message, reuse=self._regenerating.pop(message.message_id, None))

    async def refuse(self, message: Incoming, notice: str) -> None:
        """A ⏳ reaction, not a wall of text: the sender sees it, the channel is not flooded."""
        if message.message_id in self._interactions:
            await self._interactions[message.message_id].finish(notice)
            return
        if not self.logged_in():
            return  # a reaction is a courtesy; not worth waiting for Discord to come back
        channel = self.channel(int(message.channel_id), _int(message.server_id))
        try:
            await channel.get_partial_message(int(message.message_id)).add_reaction(REFUSED_EMOJI)
        except discord.Forbidden as exc:
            self.forbidden(channel.id, exc)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord reaction failed", error=str(exc))

    # -- what replies need (adapters.discord.reply.ReplyHost) -----------------------------------

    def channel(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        assert self.client is not None, "the Discord adapter was not started"
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    def logged_in(self) -> bool:
        return self._logged_in.is_set()

    async def wait_logged_in(self) -> None:
        await self._logged_in.wait()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        return self._tasks.spawn(coro, name)

    def sent(self, message_id: int, reply: MessageReply) -> None:
        self._replies[message_id] = reply
        while len(self._replies) > REMEMBERED_REPLIES:
            self._replies.popitem(last=False)

    def forbidden(self, channel_id: int, error: discord.HTTPException) -> None:
        if channel_id not in self._forbidden:  # once per channel: a muted bot must not spam logs
            self._forbidden.add(channel_id)
            log.warning(
                "discord: no permission in this channel (or the user's DMs are closed)",
                channel=channel_id,
                code=error.code,
                status=error.status,
            )

    async def reply_deleted(self, reply: MessageReply) -> None:
        # Nobody can see the answer any more: stop spending the model's time on it.
        await self._deliver(StopRequested(PLATFORM, reply.message.channel_id))

    def failed(self, error: BaseException) -> None:
        self.errors.append(error)

    # -- the client's lifetime ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.settings.token is not None
        token = self.settings.token.get_secret_value()
        backoff = Backoff(self._retry_s, RETRY_MAX_S)
        while not self._stopping:
            client = self.client = HearthClient(
                self, self._guild_ready_timeout, self._reidentify_delay_s
            )
            try:
                await client.login(token)
                self._logged_in.set()
                backoff.reset()
                self.spawn(self._sync_commands(client), "discord-sync-commands")
                await client.connect(reconnect=True)
            except discord.LoginFailure:
                return self.give_up(TOKEN_REJECTED)
            except discord.PrivilegedIntentsRequired:
                return self.give_up(INTENT_MISSING)
            except discord.ConnectionClosed as exc:
                # discord.py reconnects by itself for every code that allows it.
                return self.give_up(FATAL_CLOSE.get(exc.code, f"Discord closed: code {exc.code}"))
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("discord unreachable; retrying", error=str(exc), retry_s=backoff.delay)
            except Exception as exc:  # a bug must not end Discord for good: log, retry
                log.exception("discord client failed; retrying", retry_s=backoff.delay)
                self.failed(exc)
            finally:
                self._logged_in.clear()
                self.connected = False
                with contextlib.suppress(Exception):
                    await client.close()
            if self._stopping:
                return
            await asyncio.sleep(backoff.next())

    async def _sync_commands(self, client: HearthClient) -> None:
        try:
            if self.settings.command_guilds:
                for guild_id in self.settings.command_guilds:
                    guild = discord.Object(guild_id)
                    client.tree.copy_global_to(guild=guild)
                    await client.tree.sync(guild=guild)
            else:
                await client.tree.sync()
            log.info("discord slash commands synced", guilds=self.settings.command_guilds or "all")
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord: could not sync slash commands", error=str(exc))

    # -- reading back what a fresh session missed (adapters.discord.catch_up) ----------------

    async def read_back_missed(self, client: HearthClient) -> None:
        def current() -> bool:  # a stop, or a client given up on, ends it
            return client is self.client and not client.is_closed() and not self._stopping

        snapshot = self.catch_up.to_read_now(client)
        if snapshot is None:
            return
        try:
            await self.catch_up.read_back(client, snapshot, current)
        except Exception as exc:  # a spawned task: nobody else would see it
            log.exception("discord: reading back failed")
            self.failed(exc)

    async def _deliver(self, event: ChatEvent) -> bool:
        """False when it could not be delivered (stopping): nothing was done with it."""
        if self._sink is None or self._stopping:
            return False
        await self._sink(event)
        return True

    # -- events in ------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        client = self.client
        me = client.user if client is not None else None
        if client is None or me is None or self._stopping:
            return  # not looked at: a read-back after the restart will
        guild_id = message.guild.id if message.guild else None
        channel_id = message.channel.id
        if message.author.id == me.id:
            self.catch_up.saw_own(channel_id, guild_id, message.id)
        if not addressed(self.reader.addressing(message, me)):
            return
        if not self.catch_up.first_time(message.id):
            return
        self.catch_up.begin(channel_id, guild_id, message.id)
        left = False  # not passed on because we are stopping: read back after the restart
        try:
            channels = await self.reader.channel_and_parent(client, message.channel, guild_id)
            if self.access.allows(message.author.id, guild_id, channels):
                left = not await self._deliver(await self.reader.incoming(message, me))
        finally:
            self.catch_up.end(channel_id, guild_id, message.id, left)

    async def on_edit(self, message: discord.Message, data: Any) -> None:
        client = self.client
        me = client.user if client is not None else None
        if client is None or me is None:
            return
        if not data.get("edited_timestamp") or "content" not in data:
            return  # not a user's edit (e.g. Discord adding a link preview)
        # Only messages the bot was asked can be in its history: skip the rest of the server.
        if not addressed(self.reader.addressing(message, me)):
            return
        guild_id = message.guild.id if message.guild else None
        channels = await self.reader.channel_and_parent(client, message.channel, guild_id)
        if not self.access.allows(message.author.id, guild_id, channels):
            return
        text = await self.reader.text(message, me)
        await self._deliver(MessageEdited(PLATFORM, str(message.channel.id), str(message.id), text))

    async def on_delete(self, channel_id: int, message_ids: Iterable[int]) -> None:
        # Always passed on: deleting from the store is the privacy promise, whoever it was.
        for message_id in message_ids:
            self._replies.pop(message_id, None)
            await self._deliver(MessageDeleted(PLATFORM, str(channel_id), str(message_id)))

    async def on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.client.user if self.client else None
        kind = reaction_kind(str(payload.emoji))
        if me is None or kind is None or payload.user_id == me.id:
            return
        reply = self._replies.get(payload.message_id)
        if kind == "stop":
            # Only an answer still being written can be stopped.
            if reply is None or reply.closed:
                return
            if may_steer(payload.user_id, int(reply.message.author_id), self.access):
                await self._deliver(StopRequested(PLATFORM, reply.message.channel_id))
            return
        if payload.message_author_id not in (None, me.id):
            return
        original = reply.message if reply is not None else await self._asked(payload)
        if original is None or not may_steer(payload.user_id, int(original.author_id), self.access):
            return
        if reply is not None and not reply.closed:
            return  # still answering: regenerating now would race the answer in flight
        # The new answer takes over the old answer's messages (edited in place).
        reuse = reply.message_ids if reply is not None else [payload.message_id]
        self._regenerating[original.message_id] = reuse
        try:
            await self._deliver(RegenerateRequested(original))
        finally:  # the core opened its reply meanwhile, or it had nothing to regenerate
            self._regenerating.pop(original.message_id, None)

    async def run_command(
        self, interaction: discord.Interaction, text: str, ephemeral: bool
    ) -> None:
        """A slash command, answered through the core as the equivalent `!` command."""
        user = interaction.user
        channel_id = interaction.channel_id
        reply = InteractionReply(interaction, ephemeral)
        guild_id = interaction.guild_id
        parents = await self.reader.channel_and_parent(
            interaction.client, interaction.channel, guild_id
        )
        if channel_id is None or not self.access.allows(user.id, guild_id, parents):
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
            mentions_bot=True,
            server_id=str(guild_id) if guild_id else None,
            is_admin=self.access.is_admin(user.id),
        )
        command = parse_command(text)
        if isinstance(command, Command) and not may_run(
            command, self.bot_settings.admin_commands, incoming.is_direct, incoming.is_admin
        ):
            reply.ephemeral = True  # "only an admin can": for the asker's eyes alone
        self._interactions[incoming.message_id] = reply
        try:
            handled = asyncio.ensure_future(self._deliver(incoming))
            done, _ = await asyncio.wait({handled}, timeout=DEFER_AFTER_S)
            if not done:
                await reply.defer()
            await handled
        finally:
            self._interactions.pop(incoming.message_id, None)
        if not reply.answered:  # the daemon is stopping, or ignored it
            await reply.finish(COMMANDS_PAUSED)

    async def _asked(self, payload: discord.RawReactionActionEvent) -> Incoming | None:
        """The question behind one of our replies from before a restart: our reply
        references it, so fetch both."""
        me = self.client.user if self.client else None
        if me is None:
            return None
        channel = self.channel(payload.channel_id, payload.guild_id)
        try:
            ours = await channel.fetch_message(payload.message_id)
            if ours.author.id != me.id or ours.reference is None or not ours.reference.message_id:
                return None
            asked = await channel.fetch_message(ours.reference.message_id)
        except (discord.HTTPException, aiohttp.ClientError, OSError):
            return None
        # Regenerated now: the question's own time would count against the catch-up window.
        return replace(await self.reader.incoming(asked, me), received_at=time.time())


def _int(value: str | None) -> int | None:
    return int(value) if value else None
