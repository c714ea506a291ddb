"""The model worker: one answer at a time, taken from the fair queue.

For each job: resolve the channel's persona and sampling, build the prompt within the context
window, generate, stream the text to the reply handle, then store the answer and clear the
pending mark in one step. When the daemon stops, the answer in flight may finish within a
grace period; after that it ends with a notice and stays pending for the next start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from bot import texts
from bot.events import Incoming, ReplyHandle
from bot.live import Live
from bot.model.backend import Backend
from bot.model.types import Generation, GenerationRequest, draw_seed
from bot.personas import Sampling
from bot.prompt.builder import ContextBuilder, Prompt, TooLong
from bot.prompt.thinking import ThinkFilter, with_thinking
from bot.scheduler import FairQueue, Ticket
from bot.scopes import resolve_for
from bot.store import Store

log = structlog.get_logger(__name__)

# After the grace period: how long a stopped answer may take to show its final notice.
ABANDON_S = 5.0


@dataclass(slots=True)
class Job:
    """An accepted message waiting for its answer: its store row and where to show it."""

    row: int
    message: Incoming
    reply: ReplyHandle


def shown_answer(answer: str, cut_at: int | None, kept: int | None, stopped: bool = False) -> str:
    """The text users see: never empty (platforms reject that), and with a brief note when
    the reply was stopped, hit max_tokens, or older history was left out."""
    notes = [texts.NOTE_STOPPED] if stopped else []
    if cut_at is not None:
        notes.append(texts.NOTE_MAX_TOKENS.format(max_tokens=cut_at))
    if kept is not None:
        notes.append(texts.NOTE_TRIMMED.format(kept=kept))
    return (answer.strip() or texts.EMPTY_REPLY) + texts.footnote(notes)


class Responder:
    """Runs the one model worker over the queue and says what it is doing."""

    def __init__(
        self,
        live: Live,
        store: Store,
        backend: Backend,
        queue: FairQueue[Job],
        context: ContextBuilder,
    ) -> None:
        self.live = live
        self.store = store
        self.backend = backend
        self.queue = queue
        self.context = context
        self.answered = 0
        self._reused: dict[str, int] = {}  # channel → prompt tokens reused by its last reply
        self._current: Job | None = None
        self._generation: Generation | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._abandon = False  # shutting down without waiting for the answer in flight

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="hearthbot-worker")

    def enqueue(self, channel: str, job: Job, ticket: Ticket | None = None) -> None:
        """Queue a job admitted just now (with its `ticket`), or one accepted before (pending
        after a restart, or asked to be answered again)."""
        if ticket is None:
            self.queue.restore(channel, job)
        else:
            self.queue.put(ticket, channel, job)
        self._idle.clear()

    async def finish(self, grace: float) -> None:
        """Let the answer in flight finish within `grace` seconds, else stop it with a final
        notice (it stays pending, like every queued message); then end the worker. The caller
        has set `live.stopping`, so the worker takes no new job."""
        worker = self._worker
        if worker is None or worker.done():
            return
        if self._current is None:
            worker.cancel()  # only waiting for work
        else:
            log.info("finishing the answer in flight", grace_s=grace)
            await asyncio.wait([worker], timeout=grace)
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

    def forget_queued(self, user_key: str) -> int:
        """Drop a user's queued messages (they asked to be forgotten)."""
        return self.queue.remove(lambda job: job.message.user_key != user_key)

    def abandon(self) -> None:
        """Stop the answer in flight now instead of waiting out the grace period."""
        self._abandon = True
        if self._generation is not None:
            self._generation.cancel()

    def stop_answer_to(self, channel: str, message_id: str) -> bool:
        """A user asked to stop: end the answer to message `message_id` of `channel` if it is
        being generated now. False when it is not (queued, done, or never asked)."""
        current, generation = self._current, self._generation
        if current is None or generation is None or not _answers(current, channel, message_id):
            return False
        generation.cancel()
        return True

    def is_answering(self, channel: str, message_id: str) -> bool:
        """Whether the answer to this message is queued or being generated."""
        current = self._current
        if current is not None and _answers(current, channel, message_id):
            return True
        return self.queue.any(lambda job: _answers(job, channel, message_id))

    @property
    def in_flight(self) -> Generation | None:
        """The generation running now, if any (health checks watch its progress)."""
        return self._generation

    def reused_tokens(self, channel: str) -> int:
        """Prompt tokens the channel's last reply took from the KV cache."""
        return self._reused.get(channel, 0)

    async def wait_idle(self) -> None:
        """Until nothing is queued or being answered."""
        while len(self.queue) or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _work(self) -> None:
        while not self.live.stopping:  # stopping: the rest stays pending for the next start
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
                self.live.observer.error("answer")
                await self.store.drop_pending(job.row)
                await job.reply.fail(texts.GENERATION_FAILED)
            finally:
                self._current = None

    async def _answer(self, job: Job) -> None:
        message = job.message
        bot = self.live.settings.bot
        resolved = await resolve_for(self.store, message, self.live.personas, bot.default_persona)
        sampling = resolved.sampling
        n_ctx = self.backend.info.n_ctx
        # A persona written for a big context must still leave room for history in a small one.
        reserve = min(sampling.max_tokens, n_ctx // 2)
        prompt = await self.context.build(
            message.channel_key,
            resolved.persona.system_prompt,
            reserve=reserve,
            multi_user=not message.is_direct,
            through_row=job.row,
        )
        if isinstance(prompt, TooLong):
            await self.store.discard(job.row)
            await job.reply.fail(texts.TOO_LONG.format(tokens=prompt.tokens, limit=prompt.limit))
            return
        await job.reply.typing()
        room = n_ctx - len(prompt.tokens)
        if room < sampling.max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": room})
        generation = self.backend.start(_request(message, prompt, sampling))
        self._generation = generation
        if self._abandon:
            generation.cancel()
        try:
            thinking = await _stream(generation, job.reply)
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
        answer = thinking.answer.strip()
        if not await self.store.complete(job.row, message.channel_key, answer):
            log.info("answer dropped: the message was forgotten meanwhile")
            await job.reply.fail(texts.CANCELLED)
            return
        self.answered += 1
        self._reused[message.channel_key] = result.reused_tokens
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
        )
        final = shown_answer(
            answer,
            cut_at=sampling.max_tokens if result.finish == "length" else None,
            kept=prompt.turns_kept if prompt.window.trimmed else None,
            stopped=result.finish == "cancelled",
        )
        if bot.show_thinking:
            final = with_thinking(final, thinking.thinking)
        await job.reply.finish(final)


def _answers(job: Job, channel: str, message_id: str) -> bool:
    return (job.message.channel_key, job.message.message_id) == (channel, message_id)


def _request(message: Incoming, prompt: Prompt, sampling: Sampling) -> GenerationRequest:
    fixed = sampling.seed
    return GenerationRequest(
        messages=prompt.messages,
        sampling=sampling,
        seed=fixed if fixed is not None else draw_seed(),
        # In a group the model must not go on to write the next speaker's turn.
        stop=tuple(f"\n{name}:" for name in prompt.speakers) if not message.is_direct else (),
        cold=fixed is not None,
        prompt=prompt.tokens,
        cache_key=message.channel_key,
    )


async def _stream(generation: Generation, reply: ReplyHandle) -> ThinkFilter:
    """Show the answer as it grows; a reasoning model's <think> block is never streamed."""
    text = ""
    thinking = ThinkFilter()
    async for delta in generation:
        text += thinking.feed(delta)
        if shown := text.lstrip():  # models often open with a space or newline
            await reply.update(shown)
    thinking.flush()
    return thinking
