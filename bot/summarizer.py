"""Rolling summaries: what left a channel's context window, summarized by the model when it
has nothing else to do.

bot.responder runs a summary only on a free slot while no user message waits, and stops it
(`SummaryRun.stop`) as soon as one arrives: it is tried again in the next idle time. A
channel whose last run failed is tried after the others, so it cannot starve them. The store
is asked which channels have messages to summarize only for channels that may have some: an
answer whose prompt moved the window or read messages waiting (bot.prompt.builder's
`Prompt.summarizable`), one whose run was stopped, failed or saved (more may wait), and every
channel after a deletion or edit (the summary that held the text went with it). Each run
folds the oldest messages not summarized yet into the channel's summary (bot.summaries),
within `[memory] summary_tokens`. Its KV state is dropped as soon as it ends, so no cached
sequence or snapshot keeps the words it read.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import structlog

from bot import texts
from bot.events import Incoming
from bot.live import Live
from bot.model.backend import Backend
from bot.model.types import Generation, GenerationRequest, draw_seed
from bot.personas import Sampling
from bot.prompt.thinking import ThinkFilter
from bot.scopes import resolve_for
from bot.store import Store
from bot.summaries import Summary, Trimmed

log = structlog.get_logger(__name__)

KEY_PREFIX = "summary:"  # the KV cache key of a summary run, dropped when it ends
ROWS_PER_RUN = 200  # messages one run reads at most (fewer when they do not fit)
SEEN_MAX = 1024  # channels remembered as candidates (most recently answered)
_SAMPLING_TEMPERATURE = 0.3


@dataclass(eq=False, slots=True)
class SummaryRun:
    """One summary run holding a slot: its generation once started; `stop` pre-empts it."""

    channel: str | None = None
    generation: Generation | None = None
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True
        if self.generation is not None:
            self.generation.cancel()


def transcript_line(message: Trimmed) -> str:
    return f"{message.author_name}: {message.text}"


class Summarizer:
    """Finds channels with messages out of the window that no summary covers, and folds
    them into the channel's summary, one run at a time."""

    def __init__(self, live: Live, store: Store, backend: Backend) -> None:
        self.live = live
        self.store = store
        self.backend = backend
        self._seen: dict[str, Incoming] = {}  # channel → its latest message answered
        # Those of them that may have messages to summarize → when marked so (a mark made
        # while the store is asked is not undone by its answer).
        self._due: dict[str, int] = {}
        self._marks = itertools.count()
        self._scrubs = store.scrubs  # the store's deletions and edits when last looked
        # Channels whose last run failed, oldest failure first: tried after the others, so
        # one that keeps failing does not take every idle slot from the rest.
        self._failed: dict[str, None] = {}
        self.runs = 0  # summaries saved since the daemon started
        self.stopped = 0  # runs pre-empted or dropped

    def saw(self, message: Incoming, summarizable: bool = True) -> None:
        """A message of this channel was answered; `summarizable`: its channel may have
        messages to summarize now (Prompt.summarizable)."""
        channel = message.channel_key
        self._seen.pop(channel, None)
        self._seen[channel] = message
        if summarizable:
            self._due[channel] = next(self._marks)
        while len(self._seen) > SEEN_MAX:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._failed.pop(oldest, None)
            self._due.pop(oldest, None)

    @property
    def due(self) -> bool:
        """Some channel may have messages to summarize: worth a run in idle time."""
        return self.tokens > 0 and (bool(self._due) or self.store.scrubs != self._scrubs)

    @property
    def tokens(self) -> int:
        return self.live.settings.memory.summary_tokens

    async def next_channel(self) -> str | None:
        """A channel with messages to summarize whose persona keeps summaries, if any."""
        if self.tokens == 0:
            return None
        if self.store.scrubs != self._scrubs:  # text went, and any summary that held it
            self._scrubs = self.store.scrubs
            self._due = {channel: next(self._marks) for channel in self._seen}
        if not self._due:
            return None
        asked = dict(self._due)
        found = await self.store.unsummarized(list(asked))
        for channel, mark in asked.items():
            if channel not in found:
                self._settled(channel, mark)
        failed = [c for c in self._failed if c in found]
        for channel in [c for c in found if c not in self._failed] + failed:
            bot = self.live.settings.bot
            message = self._seen[channel]
            resolved = await resolve_for(
                self.store, message, self.live.personas, bot.default_persona
            )
            if resolved.persona.memory:
                return channel
            # Its persona keeps no summaries: looked at again when it answers with one that does.
            self._settled(channel, asked[channel])
        return None

    def _settled(self, channel: str, mark: int) -> None:
        """Nothing to summarize in `channel` as of `mark`, unless marked again since."""
        if self._due.get(channel) == mark:
            del self._due[channel]

    async def run(self, run: SummaryRun) -> bool:
        """Summarize one batch of the next channel's trimmed messages. True when a summary
        was saved (more may be waiting); False when there was nothing to do, or the run was
        stopped or failed (it is tried again later)."""
        channel = await self.next_channel()
        if channel is None or run.stopped:
            return False
        run.channel = channel
        try:
            saved = await self._summarize(run, channel)
        except Exception:
            self._failed_in(channel)
            raise
        if saved:
            self._failed.pop(channel, None)
        elif not run.stopped:
            self._failed_in(channel)
        return saved

    def _failed_in(self, channel: str) -> None:
        self._failed.pop(channel, None)
        self._failed[channel] = None  # the newest failure: tried last

    async def _summarize(self, run: SummaryRun, channel: str) -> bool:
        """Fold the oldest messages of `channel` not summarized yet into its summary."""
        previous = await self.store.summary(channel)
        after = previous.through_row if previous else 0
        rows = await self.store.trimmed(channel, after, ROWS_PER_RUN)
        if not rows:
            return False
        request, fitted = await asyncio.to_thread(self._request, channel, previous, rows)
        key = KEY_PREFIX + channel
        try:
            text = await self._generate(run, request)
        finally:
            await self.backend.forget(key)  # the words it read stay in no KV cache
        if text is None:
            self.stopped += 1
            return False
        tokens = await asyncio.to_thread(self.backend.count_tokens, text)
        used = rows[:fitted]
        if not await self.store.save_summary(channel, text, tokens, previous, used):
            log.info("summary dropped: its messages changed meanwhile", channel=channel)
            self.stopped += 1
            return False
        self.runs += 1
        log.info("summarized", channel=channel, messages=len(used), tokens=tokens)
        return True

    def _request(
        self, channel: str, previous: Summary | None, rows: list[Trimmed]
    ) -> tuple[GenerationRequest, int]:
        """The summary request for as many of `rows` as fit the context, oldest first
        (at least one, cut to fit), and how many that is."""
        n_ctx, room = self.backend.info.n_ctx, self.tokens
        system = texts.SUMMARIZE.format(words=max(room * 2 // 3, 10))
        fixed = self.backend.count_tokens(system) + self.backend.count_tokens(
            previous.text if previous else ""
        )
        budget = n_ctx - room - fixed - 64  # 64: template markers and the request's words
        lines: list[str] = []
        used = 0
        for message in rows:
            line = transcript_line(message)
            cost = self.backend.count_tokens(line) + 1
            if lines and used + cost > budget:
                break
            lines.append(line)
            used += cost
        while True:
            content = texts.summary_request(previous.text if previous else None, "\n".join(lines))
            messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
            tokens = self.backend.prompt_tokens(messages)
            if len(tokens) + room <= n_ctx:
                break
            if len(lines) > 1:
                lines.pop()
            elif len(lines[0]) > 1:  # one message longer than the context: its beginning
                lines[0] = lines[0][: len(lines[0]) // 2]
            else:
                raise ValueError("the summary so far leaves no room for messages")
        request = GenerationRequest(
            messages=messages,
            sampling=Sampling.model_validate(
                {"temperature": _SAMPLING_TEMPERATURE, "max_tokens": room}
            ),
            seed=draw_seed(),
            prompt=tokens,
            cache_key=KEY_PREFIX + channel,
        )
        return request, len(lines)

    async def _generate(self, run: SummaryRun, request: GenerationRequest) -> str | None:
        """The summary's text; None when stopped or failed."""
        generation = self.backend.start(request)
        run.generation = generation
        if run.stopped:
            generation.cancel()
        thinking = ThinkFilter()
        try:
            async for delta in generation:
                thinking.feed(delta)
        finally:
            run.generation = None
        thinking.flush()
        text = thinking.answer
        result = generation.result
        if result.finish in ("cancelled", "error") or run.stopped:
            if result.finish == "error":
                log.warning("summarizing failed", error=result.error)
            return None
        return text.strip()
