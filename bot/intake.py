"""Intake: every event an adapter delivers, taken the same way on every platform.

A message ends in exactly one of: a command answer, a refusal (at most one notice per user per
minute), being ignored, acceptance, or (while stopping) deferral. An accepted message is saved
as pending before it is queued, and the responder clears the mark in the same transaction that
saves the answer, so it is answered exactly once, also across a restart. Edits, deletions, stop
and regenerate requests follow the platform.
"""

from __future__ import annotations

import time
import unicodedata

import structlog

from bot import texts
from bot.commands.parse import Command, CommandError, parse_command
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
from bot.live import Live
from bot.model.backend import Backend
from bot.responder import Job, Responder
from bot.scheduler import FairQueue, Refusal, Ticket
from bot.store import Store

log = structlog.get_logger(__name__)


def clean_text(text: str) -> str:
    """Drop control characters a platform may deliver (NUL, escape sequences, lone
    surrogates) but keep newlines and tabs."""
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()


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

    async def handle(self, event: ChatEvent) -> Outcome:
        """Never raises: bad input must not crash the daemon."""
        try:
            if isinstance(event, Incoming):
                return await self._take(event)
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
                self._queue_again(pending.row, message)
            else:
                await self.store.drop_pending(pending.row)
                await adapter.open_reply(message).fail(texts.MISSED_WHILE_DOWN)
        if len(self.queue):
            log.info("restored pending messages", count=len(self.queue))

    async def _apply(
        self, event: MessageEdited | MessageDeleted | StopRequested | RegenerateRequested
    ) -> Outcome:
        if isinstance(event, MessageEdited):
            key = channel_key(event.platform, event.channel_id)
            await self.store.edit_message(key, event.message_id, clean_text(event.text))
            await self.backend.forget(key)
        elif isinstance(event, MessageDeleted):
            key = channel_key(event.platform, event.channel_id)
            await self.backend.forget(key)  # the deleted text must not linger in memory either
            self.queue.remove(
                lambda job: (
                    (job.message.channel_key, job.message.message_id) != (key, event.message_id)
                )
            )
            await self.store.delete_message(key, event.message_id)
        elif isinstance(event, StopRequested):
            key = channel_key(event.platform, event.channel_id)
            if not self.responder.stop_answer_to(key, event.message_id):
                return Outcome.IGNORED  # only an answer being written can be stopped
        else:
            row = await self.store.reopen(event.message)
            if row is None:
                return Outcome.IGNORED
            self._queue_again(row, event.message)
        return Outcome.APPLIED

    def _queue_again(self, row: int, message: Incoming) -> None:
        """Queue a message accepted before (restored or regenerated): no bound, no limit."""
        reply = self.live.adapters[message.platform].open_reply(message)
        self.responder.enqueue(message.channel_key, Job(row, message, reply))

    async def _take(self, message: Incoming) -> Outcome:
        if self.live.stopping:
            return await self._defer(message)
        adapter = self.live.adapters[message.platform]
        text = clean_text(message.text)
        parsed = parse_command(text)
        if not text or parsed is not None:
            reply = adapter.open_reply(message)
            if not text:
                answer = texts.EMPTY_MESSAGE
            elif isinstance(parsed, CommandError):
                answer = parsed.message
            else:
                assert isinstance(parsed, Command)
                answer = await self.commands.run(parsed, message)
            await reply.finish(answer)
            return Outcome.COMMAND
        ticket = self.queue.admit(message.user_key, rate_exempt=self.live.is_admin(message))
        if isinstance(ticket, Refusal):
            if self.queue.should_notify(message.user_key):
                notice = texts.BUSY if ticket is Refusal.BUSY else texts.RATE_LIMITED
                await adapter.refuse(message, notice)
            log.info("refused", reason=ticket.value, platform=message.platform)
            self.live.observer.refused(message.platform, ticket.value)
            return Outcome.REFUSED
        return await self._accept(message, text, ticket, adapter)

    async def _defer(self, message: Incoming) -> Outcome:
        """Shutting down: a question is not answered now, but saved as pending, so the next
        start answers it (within catch_up_window_s) instead of it being lost. A command is
        not kept: its sender is told to try again."""
        text = clean_text(message.text)
        if not text:
            return Outcome.IGNORED
        if parse_command(text) is None:
            saved = await self.store.accept(message, text)
            return Outcome.IGNORED if saved is None else Outcome.DEFERRED
        await self.live.adapters[message.platform].open_reply(message).finish(texts.TRY_AGAIN)
        return Outcome.COMMAND

    async def _accept(
        self, message: Incoming, text: str, ticket: Ticket, adapter: Adapter
    ) -> Outcome:
        try:
            quoted = message.reply_to_text and clean_text(message.reply_to_text)
            if quoted and not await self.store.remembers(
                message.channel_key, message.reply_to_id, quoted
            ):
                text = texts.quote(quoted, text)  # the model should see what was replied to
            row = await self.store.accept(message, text)
        except BaseException:
            self.queue.cancel(ticket)
            raise
        if row is None:  # delivered twice by the platform: already answered or queued
            self.queue.cancel(ticket)
            return Outcome.IGNORED
        reply = adapter.open_reply(message)
        self.responder.enqueue(message.channel_key, Job(row, message, reply), ticket)
        await reply.typing()
        return Outcome.ACCEPTED
