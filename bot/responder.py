"""The model's slots: up to `backend.slots` answers at once, taken from the fair queue.

A free slot goes to the next channel in the queue's order that has no answer being generated
and no command running (`held`), so one channel never has two at once, and a command's reply
shows before any answer it lets through. Each job runs in its own task (`_serve`, one per slot in
use), written by bot.answering, which also waits out a store that cannot be written. Stops act
on answers in flight: the one a user names, those !reset or !forget delete, or all of them at
shutdown. When the daemon stops, the answers in flight may finish within one grace period;
after that they end with a notice and stay pending for the next start. Nothing but
cancellation ends the dispatcher. A slot left free while no message waits may summarize what
left a channel's window (bot.summarizer); a message that arrives stops that summary at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from bot.answering import Answering, AnswerWriter, Job
from bot.events import Incoming
from bot.live import Live
from bot.model.backend import Backend
from bot.model.types import Generation
from bot.prompt.builder import ContextBuilder
from bot.scheduler import FairQueue, Ticket
from bot.store import Store
from bot.summarizer import Summarizer, SummaryRun
from bot.usage import ReplyUsage

log = structlog.get_logger(__name__)

# After the grace period: how long stopped answers may take to show their final notice.
ABANDON_S = 5.0


class Responder:
    """Runs the model's slots over the queue and says what they are doing."""

    def __init__(
        self,
        live: Live,
        store: Store,
        backend: Backend,
        queue: FairQueue[Job],
        context: ContextBuilder,
    ) -> None:
        self.live = live
        self.queue = queue
        self.slots = max(1, backend.slots)
        self._writer = AnswerWriter(live, store, backend, context)
        self._answering: dict[str, Answering] = {}  # channel → its answer in flight
        self._held: dict[str, int] = {}  # channel → commands running there
        self.summarizer = Summarizer(live, store, backend)
        self._summary: SummaryRun | None = None  # the summary holding a slot, if one does
        self._summary_task: asyncio.Task[None] | None = None
        # A channel may have messages to summarize (an answer moved its window, or a
        # summary went): a run in the next idle time looks.
        self._summary_due = False
        self._wake = asyncio.Event()  # a job came, or a slot or a channel is free
        self._slot_free = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None  # the dispatcher handing out slots
        self._idle = asyncio.Event()
        self._idle.set()

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
        self._stop_summary()  # summaries never delay an answer
        self._wake.set()

    def join(self, channel: str, job: Job, limit: int) -> bool:
        """Let the channel's queued answer answer `job`'s message too (a burst in a
        free-chat channel), if one is queued, may take more, and has fewer than `limit`
        messages. The newest message is the one answered (its prompt reaches it)."""
        queued = self.queue.last(channel)
        if queued is None or not queued.joinable or len(queued.joined) + 1 >= limit:
            return False
        earlier = Job(queued.row, queued.message, queued.reply)
        queued.joined.append(earlier)
        queued.row, queued.message, queued.reply = job.row, job.message, job.reply
        return True

    @contextlib.asynccontextmanager
    async def held(self, channel: str) -> AsyncIterator[None]:
        """No answer starts in `channel` meanwhile: `!reset` shows "cleared" before the answer
        to a message it kept (still waiting), as it cleared before that answer was written."""
        self._held[channel] = self._held.get(channel, 0) + 1
        try:
            yield
        finally:
            self._held[channel] -= 1
            if not self._held[channel]:
                del self._held[channel]
            self._wake.set()

    async def finish(self, grace: float) -> None:
        """Let the answers in flight finish within `grace` seconds (one period for all of
        them), else stop them with a final notice (they stay pending, like every queued
        message); the caller has set `live.stopping`, so no new job is taken."""
        self._stop_summary()
        if self._summary_task is not None:
            await asyncio.wait([self._summary_task])
        worker = self._worker
        if worker is None:
            return
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the worker failed")
        tasks = [a.task for a in self._answering.values() if a.task is not None]
        if not tasks:
            return
        log.info("finishing the answers in flight", count=len(tasks), grace_s=grace)
        _, late = await asyncio.wait(tasks, timeout=grace)
        if late:
            log.info("grace period over: stopping the answers in flight", count=len(late))
            self.abandon()
            _, late = await asyncio.wait(late, timeout=ABANDON_S)
        for task in late:  # e.g. a platform call that hangs
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def forget_queued(self, user_key: str) -> int:
        """Drop a user's queued messages (they asked to be forgotten)."""
        return self.drop_queued(lambda job: job.message.user_key != user_key)

    def drop_queued(self, keep: Callable[[Job], bool]) -> int:
        """Drop the queued jobs for which keep() is False (deleted, forgotten). Idle if none
        is left: the worker, woken for a job dropped here, would not say so itself."""
        # Of a queued burst only the messages not kept go; its newest left is then answered.
        removed = sum(_prune(job, keep) for job in self.queue.jobs() if job.joined)
        removed += self.queue.remove(keep)
        if not len(self.queue) and not self._answering:
            self._idle.set()
        return removed

    def abandon(self) -> None:
        """Stop the answers in flight now instead of waiting out the grace period."""
        self._writer.abandon()
        for answering in self._answering.values():
            answering.stop()

    def stop_answer_to(self, channel: str, message_id: str) -> bool:
        """A user asked to stop: end the answer to message `message_id` of `channel` if it is
        being generated now. False when it is not (queued, done, or never asked)."""
        answering = self._answering.get(channel)
        if (
            answering is None
            or answering.generation is None
            or not _answers(answering.job, channel, message_id)
        ):
            return False
        answering.stop()
        return True

    def is_answering(self, channel: str, message_id: str) -> bool:
        """Whether the answer to this message is queued or being generated."""
        answering = self._answering.get(channel)
        if answering is not None and _answers(answering.job, channel, message_id):
            return True
        return self.queue.any(lambda job: _answers(job, channel, message_id))

    async def stop_answers(self, to: Callable[[Incoming], bool]) -> None:
        """Stop the answers in flight to messages for which `to` holds, and wait until they
        have ended (shown and stored as stopped; one the store would not take ends unsaved
        at once, not retried), so what comes next sees them settled."""
        self._stop_summary()  # it may be reading what is being deleted: it runs again later
        tasks = []
        for answering in list(self._answering.values()):
            if to(answering.job.message) and answering.task is not None:
                answering.stop()
                tasks.append(answering.task)
        if tasks:
            await asyncio.wait(tasks)  # never cancels them, even if this caller is cancelled

    def failure(self) -> str | None:
        """Why the dispatcher (the worker handing out slots) is gone while the daemon runs
        (health checks withhold the watchdog then), else None. Only its type names an error:
        health output must not leak text."""
        worker = self._worker
        if worker is None or not worker.done() or self.live.stopping:
            return None
        if worker.cancelled():
            return "the answer worker stopped (cancelled)"
        error = worker.exception()
        return f"the answer worker stopped ({type(error).__name__ if error else 'returned'})"

    @property
    def in_flight(self) -> tuple[Generation, ...]:
        """The generations running now (health checks watch their progress)."""
        return tuple(a.generation for a in self._answering.values() if a.generation is not None)

    @property
    def busy(self) -> int:
        """Slots in use: answers being prepared, generated or shown."""
        return len(self._answering)

    @property
    def answered(self) -> int:
        """Answers given since the daemon started."""
        return self._writer.answered

    def reused_tokens(self, channel: str) -> int:
        """Prompt tokens the channel's last reply took from the KV cache."""
        return self._writer.reused_tokens(channel)

    def last_usage(self, channel: str) -> ReplyUsage | None:
        """The figures of the channel's last reply since the start (None: none yet)."""
        return self._writer.last_usage.get(channel)

    @property
    def summarizing(self) -> bool:
        """A summary run holds a slot, or one is due (a channel may have messages to
        summarize)."""
        return self._summary is not None or self._summary_due

    async def wait_idle(self) -> None:
        """Until nothing is queued or being answered."""
        while len(self.queue) or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _work(self) -> None:
        """Hands each free slot to the next channel in the queue's order that has no answer
        in flight."""
        while not self.live.stopping:  # stopping: the rest stays pending for the next start
            if len(self._answering) + (self._summary is not None) >= self.slots:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            self._wake.clear()
            job = self.queue.next_nowait(self._answering.keys() | self._held.keys())
            if job is None:
                if not len(self.queue):
                    if not self._answering:
                        self._idle.set()
                    if self._summary_due and self._summary is None:
                        self._start_summary()
                        continue
                await self._wake.wait()
                continue
            self._idle.clear()
            answering = Answering(job)
            self._answering[job.message.channel_key] = answering
            answering.task = asyncio.create_task(
                self._serve(answering), name=f"hearthbot-answer-{job.row}"
            )

    async def _serve(self, answering: Answering) -> None:
        """One job in one slot, start to end; then the slot is free for the next channel."""
        try:
            await self._writer.run(answering)
        finally:
            del self._answering[answering.job.message.channel_key]
            self.summarizer.saw(answering.job.message, answering.summarizable)
            self._summary_due = self._summary_due or self.summarizer.due
            self._slot_free.set()
            self._wake.set()  # the channel may have more queued
            if not len(self.queue) and not self._answering:
                self._idle.set()

    def _start_summary(self) -> None:
        self._summary_due = False
        run = self._summary = SummaryRun()
        self._summary_task = asyncio.create_task(self._summarize(run), name="hearthbot-summary")

    async def _summarize(self, run: SummaryRun) -> None:
        """One summary run in a free slot; another follows if it saved one (more may wait)."""
        try:
            if await self.summarizer.run(run):
                self._summary_due = True
        except Exception:
            log.exception("summarizing failed")
        finally:
            self._summary = self._summary_task = None
            self._slot_free.set()
            self._wake.set()

    def _stop_summary(self) -> None:
        if self._summary is not None:
            self._summary.stop()


def _prune(job: Job, keep: Callable[[Job], bool]) -> int:
    """Drop from a burst the messages for which keep() is False, but its last one (that is
    left to the queue); returns how many went."""
    kept = [joined for joined in job.joined if keep(joined)]
    dropped = len(job.joined) - len(kept)
    if kept and not keep(job):
        newest = kept.pop()
        job.row, job.message, job.reply = newest.row, newest.message, newest.reply
        dropped += 1
    job.joined[:] = kept
    return dropped


def _answers(job: Job, channel: str, message_id: str) -> bool:
    return job.answers(channel, message_id)
