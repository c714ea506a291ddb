"""One answer in one slot (bot.responder hands out the slots), start to end.

Resolve the channel's persona and sampling, build the prompt within the context window,
generate, stream the text to the reply handle, then store the answer and clear the pending mark
in one step. A store that cannot be written (a full disk, a lock held elsewhere) does not lose
or repeat an answer: the message stays pending, saving is tried again with backoff, the user
sees one "delayed" notice, and the answer once it is saved; a stopped answer (!reset,
!forget) is not retried: it ends "(stopped)" unsaved. Nothing but cancellation ends an
answer's task, so a failure never costs its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from bot import texts
from bot.backoff import Backoff
from bot.database import StoreError
from bot.events import Incoming, ReplyHandle
from bot.history import Recall
from bot.images import BLIND_NOTICE_INTERVAL_S, OncePer
from bot.live import Live
from bot.model.backend import Backend, preparing
from bot.model.types import Generation, GenerationRequest, GenerationResult
from bot.notes import notes_scope
from bot.prompt.builder import ContextBuilder, Prompt, TooLong
from bot.prompt.thinking import ThinkFilter, with_thinking
from bot.scopes import resolve_for
from bot.store import Store
from bot.usage import ReplyUsage

log = structlog.get_logger(__name__)

# Waits before trying a failed write again, doubling: a full disk is not hammered, and an
# answer is saved soon after room is made.
STORE_RETRY_FIRST_S = 1.0
STORE_RETRY_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A generated answer on its way to the store: the text stored, the text shown."""

    text: str
    shown: str
    result: GenerationResult


@dataclass(slots=True)
class Job:
    """An accepted message waiting for its answer: its store row and where to show it."""

    row: int
    message: Incoming
    reply: ReplyHandle
    # A burst in a free-chat channel (trigger `all`): the earlier messages this one answer
    # completes too (newest last); `row` and `message` are the newest. Only a job queued for a
    # new message may take more (`joinable`), never a regenerate.
    joined: list[Job] = field(default_factory=list)
    joinable: bool = False
    # Kept while the store fails, so that a retry saves and shows the answer without
    # generating it again, and the "delayed" notice is shown once.
    answer: Answer | None = None
    streamed: str = ""  # what the user sees of the answer so far
    delayed: bool = False

    @property
    def rows(self) -> list[int]:
        """Every row this job answers: the joined ones, then its own."""
        return [*(j.row for j in self.joined), self.row]

    def answers(self, channel: str, message_id: str) -> bool:
        """Whether this job answers that message (its own or one joined)."""
        return any(
            (m.channel_key, m.message_id) == (channel, message_id)
            for m in (self.message, *(j.message for j in self.joined))
        )


@dataclass(eq=False, slots=True)
class Answering:
    """A job holding a slot: its task, and its generation once that has started."""

    job: Job
    task: asyncio.Task[None] | None = None
    generation: Generation | None = None
    stopped: bool = False  # asked to stop: its generation is cancelled as soon as it starts
    summarizable: bool = False  # its prompt says the channel may have messages to summarize
    # Set with `stopped`: a pause before another try to save the answer ends at once.
    stop_asked: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self.stopped = True
        self.stop_asked.set()
        if self.generation is not None:
            self.generation.cancel()


def shown_answer(
    answer: str, cut_at: int | None, kept: int | None, stopped: bool = False, blind: bool = False
) -> str:
    """The text users see: never empty (platforms reject that), and with a brief note when
    the reply was stopped, hit max_tokens, older history was left out, or images went unseen."""
    notes = [texts.NOTE_STOPPED] if stopped else []
    if blind:
        notes.append(texts.NOTE_CANNOT_SEE_IMAGES)
    if cut_at is not None:
        notes.append(texts.NOTE_MAX_TOKENS.format(max_tokens=cut_at))
    if kept is not None:
        notes.append(texts.NOTE_TRIMMED.format(kept=kept))
    return (answer.strip() or texts.EMPTY_REPLY) + texts.footnote(notes)


class AnswerWriter:
    """Writes answers, one job per call of `run` (one per slot in use), and counts them."""

    def __init__(self, live: Live, store: Store, backend: Backend, context: ContextBuilder) -> None:
        self.live = live
        self.store = store
        self.backend = backend
        self.context = context
        self.answered = 0
        self._reused: dict[str, int] = {}  # channel → prompt tokens reused by its last reply
        self.last_usage: dict[str, ReplyUsage] = {}  # channel → its last reply's figures
        self._abandoned = asyncio.Event()  # shutting down without waiting for the answers
        self._blind_notes = OncePer(BLIND_NOTICE_INTERVAL_S)  # per channel

    def abandon(self) -> None:
        """Shutting down: answers started from now on are stopped at once, and those waiting
        for the store give up (they stay pending). Stopping the generations running now is
        the caller's, which knows them."""
        self._abandoned.set()

    def reused_tokens(self, channel: str) -> int:
        """Prompt tokens the channel's last reply took from the KV cache."""
        return self._reused.get(channel, 0)

    async def run(self, answering: Answering) -> None:
        """Answer one job; whatever fails ends the job, never its slot's task."""
        job = answering.job
        try:
            await self._until_saved(
                job, lambda: self._answer(answering), notify=True, answering=answering
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("answering failed", platform=job.message.platform)
            self.live.observer.error("answer")
            await self._fail(job)

    async def _fail(self, job: Job) -> None:
        """A failed answer is no longer pending (once the store takes that), and its sender
        is told. An adapter that raises here despite its protocol is logged, no more."""
        try:
            rows = job.rows
            if await self._until_saved(job, lambda: self.store.drop_pending(*rows)):
                await job.reply.fail(texts.GENERATION_FAILED)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ending a failed answer failed", platform=job.message.platform)

    async def _until_saved(
        self,
        job: Job,
        step: Callable[[], Awaitable[None]],
        notify: bool = False,
        answering: Answering | None = None,
    ) -> bool:
        """Run `step` until the store takes its writes: after a StoreError the message stays
        pending and `step` runs again after a backoff; with `notify` the user is told once that
        the answer is delayed. False if the daemon gave up on it meanwhile (shutting down):
        then it is still pending, for the next start. Also False once `answering` is stopped
        (!reset or !forget wait for it): it ends "(stopped)" unsaved, and is no longer
        pending if the store takes that, so the command neither waits for the store nor
        sees the question answered after the next start."""
        backoff = Backoff(STORE_RETRY_FIRST_S, STORE_RETRY_MAX_S)
        while True:
            try:
                await step()
                return True
            except StoreError as exc:
                log.warning("the store failed; trying again", error=str(exc), in_s=backoff.delay)
                self.live.observer.error("store")
            if notify and not job.delayed:
                job.delayed = True
                shown = f"{job.streamed}\n\n{texts.DELAYED}" if job.streamed else texts.DELAYED
                await job.reply.update(shown)
            if not await self._pause(backoff.next(), answering):
                if not self._abandoned.is_set():  # stopped
                    with contextlib.suppress(StoreError):
                        await self.store.drop_pending(job.row)
                    await job.reply.fail(texts.CANCELLED)
                    return False
                await job.reply.fail(texts.SHUTTING_DOWN)
                return False

    async def _pause(self, seconds: float, answering: Answering | None) -> bool:
        """Wait before a retry; False if the daemon gave up on the answers in flight, or
        `answering` was stopped."""
        gave_up = [self._abandoned] + ([answering.stop_asked] if answering is not None else [])
        waits = [asyncio.ensure_future(event.wait()) for event in gave_up]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not any(event.is_set() for event in gave_up)

    async def _answer(self, answering: Answering) -> None:
        """Generate the answer (unless a try before did), save it, show it."""
        job = answering.job
        if job.answer is None:
            job.answer = await self._generate(answering)
            if job.answer is None:
                return
        await self._save_and_show(job, job.answer)

    async def _build(self, answering: Answering) -> tuple[Prompt, GenerationRequest] | TooLong:
        """The prompt for the job's message, and what the model is asked (with the persona's
        sampling)."""
        job = answering.job
        message = job.message
        bot = self.live.settings.bot
        resolved = await resolve_for(self.store, message, self.live.personas, bot.default_persona)
        sampling = resolved.sampling
        n_ctx = self.backend.info.n_ctx
        # A persona written for a big context must still leave room for history in a small one.
        reserve = min(sampling.max_tokens, n_ctx // 2)
        memory, remembers = self.live.settings.memory, resolved.persona.memory
        notes_of = (message.user_key, notes_scope(message)) if memory.notes_per_person else None
        recall = Recall(notes_of if remembers else None, remembers and memory.summary_tokens > 0)
        prompt = await self.context.build(
            message.channel_key,
            resolved.persona.system_prompt,
            reserve=reserve,
            multi_user=not message.is_direct,
            through_row=job.row,
            recall=recall,
        )
        if isinstance(prompt, TooLong):
            return prompt
        answering.summarizable |= prompt.summarizable
        return prompt, prompt.request(sampling, n_ctx, message.channel_key, message.is_direct)

    async def _generate(self, answering: Answering) -> Answer | None:
        """The answer, streamed to the reply as it grows; None when the job ended without
        one (too long, or stopped at shutdown) and its notice is shown."""
        job = answering.job
        # Replies handed out together are read in one step (bot.model.llama_cpp.jobs).
        with preparing(self.backend):
            built = await self._build(answering)
            if not isinstance(built, TooLong):
                await job.reply.typing()
                prompt, request = built
                generation = self.backend.start(request)
        if isinstance(built, TooLong):
            await self.store.discard(job.row)
            if job.joined:  # they stay in the history; this answer was theirs too
                await self.store.drop_pending(*job.rows[:-1])
            await job.reply.fail(texts.TOO_LONG.format(tokens=built.tokens, limit=built.limit))
            return None
        answering.generation = generation
        if self._abandoned.is_set() or answering.stopped:
            generation.cancel()
        try:
            thinking = await _stream(generation, job)
        except asyncio.CancelledError:
            generation.cancel()  # shutting down: the message stays pending for next start
            await job.reply.fail(texts.SHUTTING_DOWN)
            raise
        finally:
            answering.generation = None
        result = generation.result
        if self._abandoned.is_set() and result.finish == "cancelled":
            # Shutting down: a final notice rather than a frozen half answer; still pending.
            await job.reply.fail(texts.SHUTTING_DOWN)
            return None
        if result.finish == "error":
            raise RuntimeError(result.error or "generation failed")
        answer = thinking.answer.strip()
        final = shown_answer(
            answer,
            cut_at=request.sampling.max_tokens if result.finish == "length" else None,
            kept=prompt.turns_kept if prompt.window.trimmed else None,
            stopped=result.finish == "cancelled",
            blind=self._unseen_images(job),
        )
        if self.live.settings.bot.show_thinking:
            final = with_thinking(final, thinking.thinking)
        return Answer(answer, final, result)

    def _unseen_images(self, job: Job) -> bool:
        """Pictures came with the job and the model cannot see them: said once per channel
        per hour, never silence."""
        posted = any(m.images for m in (job.message, *(j.message for j in job.joined)))
        seen = self.backend.info.sees_images
        return posted and not seen and self._blind_notes.due(job.message.channel_key)

    async def _save_and_show(self, job: Job, answer: Answer) -> None:
        message, result = job.message, answer.result
        usage = ReplyUsage.of(result)
        joined = job.rows[:-1]
        if not await self.store.complete(job.row, message.channel_key, answer.text, usage, joined):
            log.info("answer dropped: the message was forgotten meanwhile")
            await job.reply.fail(texts.CANCELLED)
            return
        self.answered += 1
        self._reused[message.channel_key] = result.reused_tokens
        self.last_usage[message.channel_key] = usage
        self.live.observer.answered(message.platform, result)
        log.info(
            "answered",
            platform=message.platform,
            prompt_tokens=result.prompt_tokens,
            reused_tokens=result.reused_tokens,
            generated_tokens=result.generated_tokens,
            finish=result.finish,
            first_token_s=round(result.first_token_s or 0, 3),
            total_s=round(result.total_s, 3),
            model_s=round(result.model_s, 3),
            energy_j=None if result.energy_j is None else round(result.energy_j, 3),
            energy_source=result.energy_source or None,
        )
        await job.reply.finish(answer.shown)


async def _stream(generation: Generation, job: Job) -> ThinkFilter:
    """Show the answer as it grows; a reasoning model's <think> block is never streamed."""
    text = ""
    thinking = ThinkFilter()
    async for delta in generation:
        text += thinking.feed(delta)
        if shown := text.lstrip():  # models often open with a space or newline
            job.streamed = shown
            await job.reply.update(shown)
    thinking.flush()
    return thinking
