"""Intake: every event an adapter delivers, taken the same way on every platform.

A message ends in exactly one of: a command answer, a refusal (at most one notice per user per
minute), being ignored, acceptance, or (while stopping) deferral. An accepted message is saved
as pending before it is queued, and the responder clears the mark in the same transaction that
saves the answer, so it is answered exactly once, also across a restart. Commands have their
own per-user rate limit. Edits and deletions follow the platform; a regenerate request is
admitted like a message from whoever asked for it, and a stop ends only the answer it names.
An edit, a deletion or a `!forget` that overtakes a message still being stored (its quote is
read first) waits for it, so it applies to that message too. Whether a message is for the bot
at all is the channel's trigger mode's (bot.triggers); in a free-chat channel (`all`) a message
arriving while the channel's answer is still queued joins that answer (up to `[bot]
burst_max`), which then completes every pending row of the burst.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from bot import texts
from bot.answering import Job
from bot.commands.parse import PREFIX, Command, CommandError, parse_command
from bot.commands.runner import CommandRunner
from bot.events import (
    Adapter,
    ChatEvent,
    Incoming,
    MessageDeleted,
    MessageEdited,
    Outcome,
    RegenerateRequested,
    StopRequested,
    channel_key,
)
from bot.images import PictureRefused, take_pictures
from bot.incoming_text import clean_text, max_message_chars
from bot.live import Live
from bot.model.backend import Backend
from bot.prompt.quotes import fetch_quote
from bot.responder import Responder
from bot.scheduler import FairQueue, Refusal, Ticket
from bot.scopes import scopes_for, trigger_of
from bot.settings import Trigger
from bot.store import ScopeSettings, Store
from bot.triggers import answers, read_in_full, runs_commands

log = structlog.get_logger(__name__)

_TRIGGERS_KEPT = 4096  # channels whose trigger settings are kept in memory, at most


class Intake:
    """The sink every adapter feeds: commands, admission, saving, and the platform's events."""

    def __init__(
        self,
        live: Live,
        store: Store,
        backend: Backend,
        queue: FairQueue[Job],
        responder: Responder,
        commands: CommandRunner,
    ) -> None:
        self.live = live
        self.store = store
        self.backend = backend
        self.queue = queue
        self.responder = responder
        self.commands = commands
        self._regenerating: set[tuple[str, str]] = set()  # answers being reopened now
        # Messages admitted but not stored yet (their quote is read first, from the platform:
        # up to seconds), each with an event set once it is stored or given up.
        self._arriving: dict[tuple[str, str], asyncio.Event] = {}
        # Scope settings a channel's trigger mode is read from: every message asks, so they
        # are read once, and again after any command (`!trigger` changes them).
        self._trigger_layers: dict[str, list[ScopeSettings]] = {}

    async def handle(self, event: ChatEvent) -> Outcome:
        """Never raises: bad input must not crash the daemon."""
        try:
            if isinstance(event, Incoming):
                return await self._arrive(event)
            return await self._apply(event)
        except Exception:
            log.exception("could not handle an event", kind=type(event).__name__)
            self.live.observer.error("event")
            return Outcome.IGNORED

    async def restore_pending(self) -> None:
        """At start: queue what was accepted but not answered before, unless it is older than
        `catch_up_window_s` (then its sender is told)."""
        window = self.live.settings.bot.catch_up_window_s
        now = time.time()
        for pending in await self.store.pending():
            message = pending.message
            adapter = self.live.adapters.get(message.platform)
            if adapter is None:
                continue  # that platform is not running now; answer when it is
            if now - message.received_at <= window:
                self._queue_again(pending.row, message, await self._trigger(message))
            else:
                await self.store.drop_pending(pending.row)
                await adapter.open_reply(message).fail(texts.MISSED_WHILE_DOWN)
        if len(self.queue):
            log.info("restored pending messages", count=len(self.queue))

    async def _apply(
        self, event: MessageEdited | MessageDeleted | StopRequested | RegenerateRequested
    ) -> Outcome:
        if isinstance(event, MessageEdited | MessageDeleted):
            await self._stored_first(event.platform, event.message_id)
        if isinstance(event, MessageEdited):
            # Only the author's own edit applies (the store checks it by platform id).
            changed = await self.store.edit_message(
                event.platform, event.message_id, event.user_key, clean_text(event.text)
            )
            for key in changed:
                await self.backend.forget(key)
            if not changed:
                return Outcome.IGNORED
        elif isinstance(event, MessageDeleted):
            gone = (event.platform, event.message_id)
            queued = self.responder.drop_queued(
                lambda job: (job.message.platform, job.message.message_id) != gone
            )
            # Where it was stored or quoted: the deleted text must not linger in memory either.
            deleted = await self.store.delete_message(event.platform, event.message_id)
            if not (deleted or queued):
                return Outcome.IGNORED  # never stored (anyone's redaction): nothing to drop
            for key in deleted:
                await self.backend.forget(key)
        elif isinstance(event, StopRequested):
            key = channel_key(event.platform, event.channel_id)
            if not self.responder.stop_answer_to(key, event.message_id):
                return Outcome.IGNORED  # only an answer being written can be stopped
        else:
            return await self._regenerate(event)
        return Outcome.APPLIED

    def _queue_again(self, row: int, message: Incoming, mode: Trigger) -> None:
        """Queue a message accepted before a restart: no bound, no limit; a burst of a
        free-chat channel is answered together again."""
        reply = self.live.adapters[message.platform].open_reply(message)
        job = Job(row, message, reply, joinable=mode == "all")
        if not (job.joinable and self._join(job)):
            self.responder.enqueue(message.channel_key, job)

    def _join(self, job: Job) -> bool:
        limit = self.live.settings.bot.burst_max
        return self.responder.join(job.message.channel_key, job, limit)

    async def _trigger(self, message: Incoming) -> Trigger:
        """The trigger mode of the message's channel (bot.scopes.trigger_of)."""
        key = message.channel_key
        layers = self._trigger_layers.get(key)
        if layers is None:
            layers = await self.store.scope_settings(scopes_for(message))
            if len(self._trigger_layers) >= _TRIGGERS_KEPT:
                self._trigger_layers.clear()
            self._trigger_layers[key] = layers
        return trigger_of(layers, message, self.live.settings)

    def _for_bot(self, message: Incoming, mode: Trigger) -> bool:
        """Whether the channel's mode takes this message: a command where commands run, any
        other message where it is answered. Nothing said to someone else is read further."""
        direct, addressed = message.is_direct, message.addressed
        raw = message.text.lstrip()
        if not raw:  # e.g. an image alone: said to the bot, it is greeted
            return direct or (addressed and mode != "off")
        if raw.startswith(PREFIX):
            return runs_commands(mode, is_direct=direct, addressed=addressed)
        keywords = self.live.settings.bot.keywords
        return answers(mode, direct, addressed, message.named, raw, keywords)

    async def _regenerate(self, event: RegenerateRequested) -> Outcome:
        """Answer a stored message again: admitted like a new message from the requester
        (the queue bound, their rate limit), and not while its answer is queued or being
        written, so one answer is never generated twice at once."""
        message = event.message
        answer = (message.channel_key, message.message_id)
        if answer in self._regenerating or self.responder.is_answering(*answer):
            return Outcome.IGNORED
        adapter = self.live.adapters[message.platform]
        requester = event.requester_key
        exempt = self.live.is_admin_user(requester, event.requester_is_admin)
        ticket = self.queue.admit(requester, rate_exempt=exempt)
        if isinstance(ticket, Refusal):
            return await self._refuse(message, requester, ticket, adapter)
        # Reopening awaits: meanwhile a second request for this answer is ignored, and once
        # it is queued (no await in between) is_answering says so.
        self._regenerating.add(answer)
        try:
            row = await self.store.reopen(message)
            reply = adapter.open_reply(message) if row is not None else None
        except BaseException:
            self.queue.cancel(ticket)
            raise
        finally:
            self._regenerating.discard(answer)
        if row is None or reply is None:  # not stored (forgotten, deleted, never asked)
            self.queue.cancel(ticket)
            return Outcome.IGNORED
        self.responder.enqueue(message.channel_key, Job(row, message, reply), ticket)
        return Outcome.APPLIED

    async def _refuse(
        self, message: Incoming, user: str, refusal: Refusal, adapter: Adapter
    ) -> Outcome:
        """Not admitted: its sender hears so at most once per notice interval."""
        if self.queue.should_notify(user):
            notice = texts.BUSY if refusal is Refusal.BUSY else texts.RATE_LIMITED
            await adapter.refuse(message, notice)
        log.info("refused", reason=refusal.value, platform=message.platform)
        self.live.observer.refused(message.platform, refusal.value)
        return Outcome.REFUSED

    async def _arrive(self, message: Incoming) -> Outcome:
        """Take a message that may be stored: from its arrival (its channel's trigger mode is
        read first) until it is stored, or not, an edit, deletion or !forget waits for it."""
        if message.text.lstrip().startswith(PREFIX):  # a command: never stored, never waited
            return await self._take(message)
        key = (message.platform, message.message_id)
        stored = self._arriving.setdefault(key, asyncio.Event())
        try:
            return await self._take(message)
        finally:
            if self._arriving.get(key) is stored:
                del self._arriving[key]
            stored.set()

    async def _take(self, message: Incoming) -> Outcome:
        adapter = self.live.adapters[message.platform]
        mode = await self._trigger(message)
        if not self._for_bot(message, mode):
            return Outcome.IGNORED
        message = await read_in_full(self.live.adapters, message)  # its files, if not read
        limit = max_message_chars(self.backend.info.n_ctx)
        if len(message.text) > limit:  # first: reading it at all costs time and memory
            return await self._too_long(message, limit, adapter)
        if self.live.stopping:
            return await self._defer(message)
        text = clean_text(message.text)
        parsed = parse_command(text)
        if not text or parsed is not None:
            # Answered at once, so not queued, but an answer in the channel all the same.
            refusal = self.queue.admit_command(message.user_key, self.live.is_admin(message))
            if refusal is not None:
                return await self._refuse(message, message.user_key, refusal, adapter)
            reply = adapter.open_reply(message)
            async with self.responder.held(message.channel_key):  # answers there start after
                if not text:
                    answer = texts.EMPTY_MESSAGE
                elif isinstance(parsed, CommandError):
                    answer = parsed.message
                else:
                    assert isinstance(parsed, Command)
                    if parsed.name == "forget":  # it must find everything said before it
                        await self._stored_first()
                    answer = await self.commands.run(parsed, message)
                    self._trigger_layers.clear()  # it may have changed one
                await reply.finish(answer)
            return Outcome.COMMAND
        ticket = self.queue.admit(message.user_key, rate_exempt=self.live.is_admin(message))
        if isinstance(ticket, Refusal):
            return await self._refuse(message, message.user_key, ticket, adapter)
        return await self._store_and_queue(message, text, ticket, adapter, mode)

    async def _too_long(self, message: Incoming, limit: int, adapter: Adapter) -> Outcome:
        """Refused unread, with a notice; it counts against the sender's rate limit like any
        message, so a flood of them is answered by one busy notice, not a notice each."""
        ticket = self.queue.admit(message.user_key, rate_exempt=self.live.is_admin(message))
        if isinstance(ticket, Refusal):
            return await self._refuse(message, message.user_key, ticket, adapter)
        self.queue.cancel(ticket)
        notice = texts.TOO_LONG_TO_READ.format(chars=len(message.text), limit=limit)
        await adapter.open_reply(message).fail(notice)
        log.info("refused", reason="too_long", platform=message.platform)
        self.live.observer.refused(message.platform, "too_long")
        return Outcome.REFUSED

    async def _defer(self, message: Incoming) -> Outcome:
        """Shutting down: a question is not answered now, but saved as pending, so the next
        start answers it (within catch_up_window_s) instead of it being lost. A command is
        not kept: its sender is told to try again."""
        text = clean_text(message.text)
        if not text:
            return Outcome.IGNORED
        if parse_command(text) is None:
            saved = await self._save(message, text, self.live.adapters[message.platform])
            if isinstance(saved, PictureRefused):
                return Outcome.REFUSED
            return Outcome.IGNORED if saved is None else Outcome.DEFERRED
        await self.live.adapters[message.platform].open_reply(message).finish(texts.TRY_AGAIN)
        return Outcome.COMMAND

    async def _save(
        self, message: Incoming, text: str, adapter: Adapter
    ) -> int | PictureRefused | None:
        """Save a question as pending with its pictures and the message it quotes: its row,
        None when the platform delivered it twice, or the refusal of a bad picture (its notice
        shown, nothing saved)."""
        images = self.live.settings.images
        pictures = await take_pictures(adapter, message, self.backend.info, images)
        if isinstance(pictures, PictureRefused):
            self.live.observer.refused(message.platform, "image")
            return pictures
        quoted = None
        if message.reply_to_id is not None:  # kept as a reference (bot.prompt.quotes)
            quoted = await fetch_quote(
                self.live.adapters, self.store, message.channel_key, message.reply_to_id
            )
        return await self.store.accept(message, text, quoted, pictures)

    async def _stored_first(self, platform: str | None = None, message_id: str = "") -> None:
        """Let a message being stored now (or, without `platform`, every one) be stored
        first: an edit, a deletion or a `!forget` that overtook it would find nothing, and
        the message would then be stored and answered as it was."""
        if platform is None:
            waits = list(self._arriving.values())
        else:
            one = self._arriving.get((platform, message_id))
            waits = [one] if one is not None else []
        for stored in waits:
            await stored.wait()

    async def _store_and_queue(
        self, message: Incoming, text: str, ticket: Ticket, adapter: Adapter, mode: Trigger
    ) -> Outcome:
        try:
            row = await self._save(message, text, adapter)
        except BaseException:
            self.queue.cancel(ticket)
            raise
        if isinstance(row, PictureRefused):
            self.queue.cancel(ticket)
            return Outcome.REFUSED
        if row is None:  # delivered twice by the platform: already answered or queued
            self.queue.cancel(ticket)
            return Outcome.IGNORED
        reply = adapter.open_reply(message)
        job = Job(row, message, reply, joinable=mode == "all" and not message.is_direct)
        if job.joinable and self._join(job):
            self.queue.cancel(ticket)  # answered with the burst: no place of its own
        else:
            self.responder.enqueue(message.channel_key, job, ticket)
        await reply.typing()
        return Outcome.ACCEPTED
