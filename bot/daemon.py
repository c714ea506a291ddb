"""Wiring and lifecycle: adapters → access/command/queue → the model worker → replies.

Every incoming message ends in exactly one of: a command answer, a refusal (at most one
notice per user per minute), being ignored, or acceptance. An accepted message is saved as
pending before it is queued and its pending mark is cleared in the same transaction that
saves the answer, so it is answered exactly once, also across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
from dataclasses import dataclass

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
    ReplyHandle,
    StopRequested,
    channel_key,
)
from bot.model.backend import Backend
from bot.model.types import Generation, GenerationRequest, draw_seed
from bot.observer import Observer
from bot.personas import PersonaSet
from bot.prompt.builder import ContextBuilder, TooLong
from bot.prompt.thinking import ThinkFilter, with_thinking
from bot.scheduler import FairQueue, Refusal, Ticket
from bot.scopes import resolve_for
from bot.settings import LIVE_BOT_SETTINGS, Settings
from bot.status import DaemonStatus, is_connected
from bot.store import Store

log = structlog.get_logger(__name__)

# After the grace period: how long a stopped answer may take to show its final notice.
ABANDON_S = 5.0

PURGE_EVERY_S = 3600.0


@dataclass(slots=True)
class Job:
    row: int
    message: Incoming
    reply: ReplyHandle


def clean_text(text: str) -> str:
    """Drop control characters a platform may deliver (NUL, escape sequences, lone
    surrogates) but keep newlines and tabs."""
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()


def shown_answer(answer: str, cut_at: int | None, kept: int | None, stopped: bool = False) -> str:
    """The text users see: never empty (platforms reject that), and with a brief note when
    the reply was stopped, hit max_tokens, or older history was left out."""
    notes = [texts.NOTE_STOPPED] if stopped else []
    if cut_at is not None:
        notes.append(texts.NOTE_MAX_TOKENS.format(max_tokens=cut_at))
    if kept is not None:
        notes.append(texts.NOTE_TRIMMED.format(kept=kept))
    return (answer.strip() or texts.EMPTY_REPLY) + texts.footnote(notes)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        backend: Backend,
        personas: PersonaSet,
        adapters: dict[str, Adapter],
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.personas = personas
        self.adapters = adapters
        self.queue: FairQueue[Job] = FairQueue(
            settings.queue.max_pending, settings.queue.per_user_per_minute
        )
        self.context = ContextBuilder(backend, store, backend.info.n_ctx)
        self.commands = CommandRunner(self)
        self.answered = 0
        self.reused: dict[str, int] = {}  # channel → prompt tokens reused by its last reply
        self._current: Job | None = None
        self._generation: Generation | None = None
        self._worker: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._abandon = False  # shutting down without waiting for the answer in flight
        self.observer = Observer()  # metrics, when served, replace this no-op

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._restore_pending()
        self._worker = asyncio.create_task(self._work(), name="hearthbot-worker")
        if self.settings.bot.retention_days is not None:
            self._retention = asyncio.create_task(self._purge_loop(), name="hearthbot-retention")
        for adapter in self.adapters.values():
            await adapter.start(self.handle)
        log.info("started", adapters=sorted(self.adapters), model=self.backend.info.name)

    async def stop(self, grace: float | None = None) -> None:
        """Stop intake; let the answer in flight finish within `grace` seconds (default
        `[bot] shutdown_grace_s`), else stop it with a final notice (it stays pending, like
        every queued message, and is answered after the restart); then disconnect."""
        self._stopping = True
        if self._retention is not None:
            self._retention.cancel()
        worker = self._worker
        if worker is not None and not worker.done():
            if self._current is None:
                worker.cancel()  # only waiting for work
            else:
                limit = self.settings.bot.shutdown_grace_s if grace is None else grace
                log.info("finishing the answer in flight", grace_s=limit)
                await asyncio.wait([worker], timeout=limit)
                if not worker.done():
                    log.info("grace period over: stopping the answer in flight")
                    self.abandon()
                    await asyncio.wait([worker], timeout=ABANDON_S)
                if not worker.done():  # e.g. a platform call that hangs
                    worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the worker failed")
        # Disconnect last: the answer just finished or stopped still had to be shown.
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.stop()
        log.info("stopped", answered=self.answered, still_pending=len(self.queue))

    def abandon(self) -> None:
        """Stop the answer in flight now instead of waiting out the grace period."""
        self._abandon = True
        if self._generation is not None:
            self._generation.cancel()

    @property
    def in_flight(self) -> Generation | None:
        """The generation running now, if any (health checks watch its progress)."""
        return self._generation

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            queued=len(self.queue),
            answering=self._generation is not None,
            answered=self.answered,
            stopping=self._stopping,
            adapters={name: is_connected(a) for name, a in sorted(self.adapters.items())},
        )

    def reload(self, settings: Settings, personas: PersonaSet) -> None:
        """SIGHUP: personas, admins and the platform sections take effect now. The rest of
        `settings` (model, queue sizes, data_dir, ...) needs a restart and is left alone."""
        bot = self.settings.bot.model_copy(
            update={name: getattr(settings.bot, name) for name in LIVE_BOT_SETTINGS}
        )
        platforms = {
            name: getattr(settings, name)
            for name in self.adapters
            if name in type(settings).model_fields
        }
        self.settings = self.settings.model_copy(update={"bot": bot, **platforms})
        self.personas = personas

    async def purge_expired(self) -> int:
        """Delete history older than `[bot] retention_days` (messages awaiting an answer stay)."""
        days = self.settings.bot.retention_days
        if days is None:
            return 0
        count = await self.store.purge(before=time.time() - days * 86400)
        if count:
            await self.backend.forget()  # purged words must not live on in cached KV state
            log.info("purged old history", messages=count)
        return count

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                log.exception("purging old history failed")
            await asyncio.sleep(PURGE_EVERY_S)

    async def wait_idle(self) -> None:
        """Until nothing is queued or being answered."""
        while len(self.queue) or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _restore_pending(self) -> None:
        window = self.settings.bot.catch_up_window_s
        now = time.time()
        for pending in await self.store.pending():
            message = pending.message
            adapter = self.adapters.get(message.platform)
            if adapter is None:
                continue  # that platform is not running now; answer when it is
            reply = adapter.open_reply(message)
            if now - message.received_at <= window:
                self.queue.restore(message.channel_key, Job(pending.row, message, reply))
            else:
                await self.store.drop_pending(pending.row)
                await reply.fail(texts.MISSED_WHILE_DOWN)
        if len(self.queue):
            log.info("restored pending messages", count=len(self.queue))

    # -- intake -------------------------------------------------------------------------------

    def is_admin(self, message: Incoming) -> bool:
        return message.is_admin or message.user_key in self.settings.bot.admins

    async def handle(self, event: ChatEvent) -> Outcome:
        """The sink every adapter feeds. Never raises: bad input must not crash the daemon."""
        try:
            if isinstance(event, Incoming):
                return await self._handle(event)
            return await self._apply(event)
        except Exception:
            log.exception("could not handle an event", kind=type(event).__name__)
            self.observer.error("event")
            return Outcome.IGNORED

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
            current, generation = self._current, self._generation
            if (
                current is not None
                and generation is not None
                and current.message.channel_key == key
            ):
                generation.cancel()
        else:
            message = event.message
            row = await self.store.reopen(message)
            if row is None:
                return Outcome.IGNORED
            reply = self.adapters[message.platform].open_reply(message)
            self.queue.restore(message.channel_key, Job(row, message, reply))
            self._idle.clear()
        return Outcome.APPLIED

    async def _handle(self, message: Incoming) -> Outcome:
        if self._stopping:
            return await self._defer(message)
        adapter = self.adapters[message.platform]
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
        ticket = self.queue.admit(message.user_key, rate_exempt=self.is_admin(message))
        if isinstance(ticket, Refusal):
            if self.queue.should_notify(message.user_key):
                notice = texts.BUSY if ticket is Refusal.BUSY else texts.RATE_LIMITED
                await adapter.refuse(message, notice)
            log.info("refused", reason=ticket.value, platform=message.platform)
            self.observer.refused(message.platform, ticket.value)
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
            await self.store.accept(message, text)
            return Outcome.IGNORED
        await self.adapters[message.platform].open_reply(message).finish(texts.TRY_AGAIN)
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
        self.queue.put(ticket, message.channel_key, Job(row, message, reply))
        self._idle.clear()
        await reply.typing()
        return Outcome.ACCEPTED

    # -- the worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while not self._stopping:  # stopping: the rest stays pending for the next start
            if not len(self.queue):
                self._idle.set()
            job = await self.queue.get()
            self._idle.clear()
            self._current = job
            try:
                await self._answer(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("answering failed", platform=job.message.platform)
                self.observer.error("answer")
                await self.store.drop_pending(job.row)
                await job.reply.fail(texts.GENERATION_FAILED)
            finally:
                self._current = None

    async def _answer(self, job: Job) -> None:
        message = job.message
        channel = message.channel_key
        resolved = await resolve_for(
            self.store, message, self.personas, self.settings.bot.default_persona
        )
        sampling = resolved.sampling
        n_ctx = self.backend.info.n_ctx
        # A persona written for a big context must still leave room for history in a small one.
        reserve = min(sampling.max_tokens, n_ctx // 2)
        prompt = await self.context.build(
            channel,
            resolved.persona.system_prompt,
            reserve=reserve,
            multi_user=not message.is_direct,
            upto_row=job.row,
        )
        if isinstance(prompt, TooLong):
            await self.store.discard(job.row)
            await job.reply.fail(texts.TOO_LONG.format(tokens=prompt.tokens, limit=prompt.limit))
            return
        await job.reply.typing()
        room = n_ctx - len(prompt.tokens)
        if room < sampling.max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": room})
        fixed = sampling.seed
        request = GenerationRequest(
            messages=prompt.messages,
            sampling=sampling,
            seed=fixed if fixed is not None else draw_seed(),
            stop=tuple(f"\n{name}:" for name in prompt.speakers) if not message.is_direct else (),
            cold=fixed is not None,
            prompt=prompt.tokens,
            cache_key=channel,
        )
        generation = self.backend.start(request)
        self._generation = generation
        if self._abandon:
            generation.cancel()
        text = ""
        thinking = ThinkFilter()  # a reasoning model's <think> block is never streamed
        try:
            async for delta in generation:
                text += thinking.feed(delta)
                if shown := text.lstrip():  # models often open with a space or newline
                    await job.reply.update(shown)
        except asyncio.CancelledError:
            generation.cancel()  # shutting down: the message stays pending for next start
            await job.reply.fail(texts.SHUTTING_DOWN)
            raise
        finally:
            self._generation = None
        result = generation.result
        if self._abandon and result.finish == "cancelled":
            # Shutting down: a final notice rather than a frozen half answer; still pending.
            await job.reply.fail(texts.SHUTTING_DOWN)
            return
        if result.finish == "error":
            raise RuntimeError(result.error or "generation failed")
        thinking.flush()
        answer = thinking.answer.strip()
        if not await self.store.complete(job.row, channel, answer):
            log.info("answer dropped: the message was forgotten meanwhile")
            await job.reply.fail(texts.CANCELLED)
            return
        self.answered += 1
        self.reused[channel] = result.reused_tokens
        self.observer.answered(message.platform, result)
        log.info(
            "answered",
            platform=message.platform,
            prompt_tokens=result.prompt_tokens,
            reused_tokens=result.reused_tokens,
            generated_tokens=result.generated_tokens,
            finish=result.finish,
            first_token_s=round(result.first_token_s or 0, 3),
            total_s=round(result.total_s, 3),
        )
        final = shown_answer(
            answer,
            cut_at=sampling.max_tokens if result.finish == "length" else None,
            kept=prompt.turns_kept if prompt.window.trimmed else None,
            stopped=result.finish == "cancelled",
        )
        if self.settings.bot.show_thinking:
            final = with_thinking(final, thinking.thinking)
        await job.reply.finish(final)

    def forget_queued(self, user_key: str) -> int:
        return self.queue.remove(lambda job: job.message.user_key != user_key)
