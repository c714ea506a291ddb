"""Discord: people's messages in (mentions, replies to the bot and DMs flagged as
addressed, the rest for the channel's trigger mode); streamed replies, reactions and slash
commands out. A translator only: it never touches the engine or the store.

discord.py runs in a background task. `start` returns at once (a Discord outage must not
hold up the daemon); a dropped gateway is resumed by discord.py, a failed login is retried
with backoff, and only a permanent refusal (a bad token, the Message Content intent not
enabled) resolves `failure` with one line for the CLI to print.

The parts: client.py (discord.py's client and its gateway events), incoming.py (a message as
the core's Incoming), interactions.py (reactions and slash commands), reply.py (an answer on
screen), catch_up.py (what was said while away), threads.py (auto_thread), access.py (who
may ask) and membership.py (whether a DM's author is in an allowed server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

import aiohttp
import discord
import structlog

from adapters.common.failure import ReportsFailure
from adapters.common.tasks import BackgroundTasks
from adapters.discord.access import PLATFORM, Access, addressed, speaks
from adapters.discord.catch_up import CatchUp
from adapters.discord.client import (
    FATAL_CLOSE,
    INTENT_MISSING,
    TOKEN_REJECTED,
    HearthClient,
    point_at,
)
from adapters.discord.incoming import Reader
from adapters.discord.interactions import Interactions
from adapters.discord.reply import InteractionReply, MessageReply
from adapters.discord.text import REFUSED_EMOJI
from adapters.discord.threads import AutoThreadChannels, in_own_thread, open_thread, opens_thread
from bot.backoff import Backoff
from bot.events import (
    ChatEvent,
    Incoming,
    MessageDeleted,
    MessageEdited,
    Outcome,
    Quoted,
    Sink,
    StopRequested,
)
from bot.personas import load_personas
from bot.settings import BotSettings, DiscordSettings

log = structlog.get_logger(__name__)

RETRY_MAX_S = 300.0


class DiscordAdapter(ReportsFailure):
    """The Adapter the core sees for Discord: starts the client, opens replies, passes on events."""

    name = PLATFORM

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
        self.auto_threads = AutoThreadChannels(self)
        self.reader = Reader(self.access, settings.attachment_max_kb)
        self.attachments = self.reader  # bot.events.ReadsAttachments
        self.images = self.reader  # bot.events.ReadsImages
        self.persona_names = load_personas(bot.personas_dir).names()
        self.client: HearthClient | None = None
        self.connected = False
        # Exceptions that discord.py would swallow into on_error (tests fail on them).
        self.errors: deque[BaseException] = deque(maxlen=100)
        self._guild_ready_timeout = guild_ready_timeout
        self._reidentify_delay_s = reidentify_delay_s
        self.retry_s = retry_s  # the first wait before trying again: a login, a final text
        self._sink: Sink | None = None
        self._runner: asyncio.Task[None] | None = None
        self._logged_in = asyncio.Event()
        self._stopping = False
        self._tasks = BackgroundTasks(PLATFORM)
        self._forbidden: set[int] = set()
        self.interactions = Interactions(self)
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
        self.reader.attachment_max_kb = settings.attachment_max_kb
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
        return self.interactions.reply_to(message)

    async def fetch_quote(self, channel_id: str, message_id: str) -> Quoted | None:
        """A replied-to message as Discord has it now (bot.events.QuoteSource)."""
        if self.client is None or not self.logged_in():
            return self.reader.quotes.recent.get(message_id)
        return await self.reader.quotes.fetch(self.client, channel_id, message_id)

    def forget_author(self, author_id: str, before: float) -> None:
        self.reader.quotes.recent.forget_author(author_id, before)

    async def refuse(self, message: Incoming, notice: str) -> None:
        """A ⏳ reaction, not a wall of text: the sender sees it, the channel is not flooded."""
        command = self.interactions.command_reply(message)
        if command is not None:
            await command.finish(notice)
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

    # -- what replies send through (adapters.discord.reply.Outbox) ------------------------------

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
        self.interactions.sent(message_id, reply)

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
        await self.deliver(
            StopRequested(PLATFORM, reply.message.channel_id, reply.message.message_id)
        )

    def failed(self, error: BaseException) -> None:
        self.errors.append(error)

    # -- the client's lifetime ------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.settings.token is not None
        token = self.settings.token.get_secret_value()
        backoff = Backoff(self.retry_s, RETRY_MAX_S)
        while not self._stopping:
            client = self.client = HearthClient(
                self, self._guild_ready_timeout, self._reidentify_delay_s
            )
            try:
                await client.login(token)
                self._logged_in.set()
                backoff.reset()
                self.spawn(
                    client.sync_commands(self.settings.command_guilds), "discord-sync-commands"
                )
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

    async def deliver(self, event: ChatEvent) -> Outcome | None:
        """What the core did with it; None when it could not be delivered (stopping):
        nothing was done with it."""
        if self._sink is None or self._stopping:
            return None
        return await self._sink(event)

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
        addressing = self.reader.addressing(message, me)
        if not speaks(addressing):  # the core decides the rest by the channel's trigger mode
            return
        if not self.catch_up.first_time(message.id):
            return
        self.catch_up.begin(channel_id, guild_id, message.id)
        left = False  # not passed on because we are stopping: read back after the restart
        denied = False  # not recorded for the read-back: only channels the bot talks in are
        try:
            allowed = await self.reader.allows(client, message.author.id, message.channel, guild_id)
            denied = not allowed
            if not denied:
                threads = self.auto_threads  # the config's, or `!autothread`'s in the core
                spoken_to = addressed(addressing) or in_own_thread(message, me, threads)
                thread = None
                if spoken_to and opens_thread(message, threads):
                    thread = await open_thread(message, self.reader.plain(message, me))
                incoming = await self.reader.incoming(message, me, spoken_to, thread)
                outcome = await self.deliver(incoming)
                left = outcome is None
                denied = outcome is Outcome.IGNORED and not spoken_to  # not the bot's talk
        finally:
            self.catch_up.end(channel_id, guild_id, message.id, left, allowed=not denied)

    async def on_edit(self, message: discord.Message, data: Any) -> None:
        client = self.client
        me = client.user if client is not None else None
        if client is None or me is None:
            return
        if not data.get("edited_timestamp") or "content" not in data:
            return  # not a user's edit (e.g. Discord adding a link preview)
        self.reader.quotes.edited(message, me)
        # Only people's messages can be in its history (any, in a free-chat channel).
        addressing = self.reader.addressing(message, me)
        if not speaks(addressing):
            return
        guild_id = message.guild.id if message.guild else None
        if not await self.reader.allows(client, message.author.id, message.channel, guild_id):
            return
        if addressed(addressing):
            text = await self.reader.text(message, me)
        else:  # as it was taken (bot.events.Incoming.addressed)
            text = self.reader.named_only(message, me)
        author = str(message.author.id)
        channel = str(message.channel.id)
        await self.deliver(MessageEdited(PLATFORM, channel, str(message.id), author, text))

    async def on_delete(self, channel_id: int, message_ids: Iterable[int]) -> None:
        # Always passed on: deleting from the store is the privacy promise, whoever it was.
        for message_id in message_ids:
            self.interactions.deleted(message_id)
            self.reader.quotes.deleted(message_id)
            await self.deliver(MessageDeleted(PLATFORM, str(channel_id), str(message_id)))


def _int(value: str | None) -> int | None:
    return int(value) if value else None
