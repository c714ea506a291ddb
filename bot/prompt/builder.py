"""Builds the prompt for one channel: stored history → turns → token-budget window → tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bot import texts
from bot.bounded import SizedCache, text_key
from bot.history import Recall, StoredMessage
from bot.model.backend import Backend
from bot.model.types import DecodedImage, GenerationRequest, draw_seed
from bot.personas import Sampling
from bot.prompt.overheads import measure
from bot.prompt.pictures import TurnPictures, read_pictures, with_placeholders
from bot.prompt.quotes import FetchQuote, Replies, read_replies, shown_quote
from bot.prompt.window import (
    ContextUse,
    Turn,
    Window,
    chat_messages,
    choose_window,
    doomed,
    speaker_text,
    turn_images,
)
from bot.store import Store
from bot.summaries import with_summary

# What the remembered token counts may hold of message texts (the texts are the keys).
COUNTS_MAX_BYTES = 8 * 1024 * 1024
# Rounds of "estimate, measure exactly, correct the per-turn overhead" before giving up.
_CALIBRATIONS = 4
_DOOMED_KEPT = 4096  # channels whose doomed row is remembered (to write it only on change)
HISTORY_ONLY = Recall()  # a prompt without notes or summary


@dataclass(frozen=True, slots=True)
class Prompt:
    """The prompt for one answer: chat messages, their tokens, and what the window kept."""

    messages: list[dict[str, str]]
    tokens: list[int]  # the text's: the pictures' cells are `image_tokens` more
    window: Window
    turns_kept: int
    speakers: tuple[str, ...]
    images: dict[int, list[DecodedImage]] = field(default_factory=dict)  # GenerationRequest's
    image_tokens: int = 0
    # Messages of the channel may wait for a summary (bot.summarizer): some that left its
    # window, or that its next trim drops, were not summarized when the prompt was read, or
    # the window moved. Only known when the summary was asked for.
    summarizable: bool = False

    def request(self, sampling: Sampling, n_ctx: int, key: str, direct: bool) -> GenerationRequest:
        """What the model is asked for channel `key`: `sampling`, its max_tokens cut to the
        room this prompt leaves in n_ctx; a fixed seed decodes cold (bot.model.llama_cpp.solo)."""
        room = n_ctx - len(self.tokens) - self.image_tokens
        if room < sampling.max_tokens:
            sampling = sampling.model_copy(update={"max_tokens": room})
        fixed = sampling.seed
        return GenerationRequest(
            messages=self.messages,
            sampling=sampling,
            seed=fixed if fixed is not None else draw_seed(),
            # In a group the model must not go on to write the next speaker's turn.
            stop=tuple(f"\n{name}:" for name in self.speakers) if not direct else (),
            cold=fixed is not None,
            prompt=self.tokens,
            cache_key=key,
            images=self.images,
        )


@dataclass(frozen=True, slots=True)
class _Fitted:
    """A window that fits: where it opens, and the prompt it makes."""

    start: int
    messages: list[dict[str, str]]
    tokens: list[int]
    doomed: int | None  # the last turn the next trim drops, if known (window.doomed)
    images: dict[int, list[DecodedImage]]
    image_tokens: int


@dataclass(frozen=True, slots=True)
class TooLong:
    """The message being answered does not fit in the context even alone."""

    tokens: int
    limit: int


class ContextBuilder:
    """Knows the model's tokenizer and context size; the trimming itself is pure
    (bot.prompt.window.choose_window)."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        n_ctx: int,
        fetch_quote: FetchQuote | None = None,
        chain_tokens: Callable[[], int] = lambda: 0,
        max_images: Callable[[], int] = lambda: 0,
    ) -> None:
        self.backend = backend
        self.store = store
        self.n_ctx = n_ctx
        self.fetch_quote = fetch_quote
        self.chain_tokens = chain_tokens  # `[bot] reply_chain_tokens`, as of now
        self.max_images = max_images  # `[images] max_images_in_context`, as of now
        # Token counts of message texts, so each turn is tokenized once, not every turn;
        # bounded by bytes, and keyed by a digest: a forgotten or deleted text must not stay
        # here as a key (nor a refused 2.6 MB one weigh 2.6 MB).
        self.counts: SizedCache[bytes, int] = SizedCache(COUNTS_MAX_BYTES, lambda k, _: len(k))
        self._doomed: dict[str, int] = {}  # channel → the doomed row last written
        # Template tokens per turn, opening the reply, once per prompt (bot.prompt.overheads);
        # the turn's grows if a prompt turns out longer than estimated.
        overheads = measure(backend, self._count)
        self.turn_overhead, self.reply_overhead = overheads.turn, overheads.reply
        self.prompt_overhead = overheads.prompt

    def _count(self, text: str) -> int:
        key = text_key(text)
        counted = self.counts.get(key)
        if counted is None:
            counted = self.backend.count_tokens(text)
            self.counts.put(key, counted)
        return counted

    def turns(
        self,
        history: Sequence[StoredMessage],
        multi_user: bool,
        replies: Replies,
        start: int = 0,
        notes: Sequence[str] = (),
        pictures: Mapping[int, TurnPictures] | None = None,
    ) -> list[Turn]:
        """The turns of `history`, the window opening at `start`: a reply shows what it
        quotes, and the reply chain above that, up to the first message in the window.
        `notes`: what the speaker of the last turn asked the bot to keep, shown just before
        that turn. `pictures`: row → the message's pictures shown, and the others named."""
        pictures = pictures or {}
        visible = {m.row for m in history[start:]}
        turns = []
        for i, m in enumerate(history):
            if m.role == "assistant":
                turns.append(Turn("assistant", m.text))
                continue
            own = pictures.get(m.row, TurnPictures())
            text = with_placeholders(m.text, own.hidden) if own.hidden else m.text
            if shown := shown_quote(m.quote, visible, replies.fetched.get(m.row)):
                earlier = []
                for link in replies.earlier.get(m.row, []):
                    if link.row in visible:
                        break
                    earlier.append((link.author_name, link.text))
                text = texts.quote(*shown, text, earlier=earlier)
            text = speaker_text(m.author_name, text, multi_user)
            if notes and i == len(history) - 1:
                text = texts.with_notes(m.author_name, list(notes), text)
            turns.append(Turn("user", text, own.shown))
        return turns

    def _most_images(self) -> int:
        """How many pictures a prompt shows: none while the model cannot see them."""
        return self.max_images() if self.backend.info.sees_images else 0

    async def quotes(self, channel: str, history: Sequence[StoredMessage]) -> Replies:
        """What the history's replies quote, and the reply chains above (bot.prompt.quotes)."""
        return await read_replies(
            self.store, self.fetch_quote, channel, history, self.chain_tokens(), self._count
        )

    def _fit(
        self,
        history: Sequence[StoredMessage],
        multi_user: bool,
        replies: Replies,
        budget: int,
        start: int,
        notes: Sequence[str],
        pictures: Mapping[int, TurnPictures],
    ) -> tuple[Window | None, list[Turn], list[int]]:
        """choose_window over the turns, again after a trim: a reply whose quoted message has
        just left the window shows the quote now, and must fit too. The start only moves on.
        A picture shown costs the projector's tokens (ModelInfo.image_tokens)."""
        is_user = [m.role == "user" for m in history]
        per_image = self.backend.info.image_tokens
        while True:
            turns = self.turns(history, multi_user, replies, start, notes, pictures)
            costs = [
                self._count(t.text) + self.turn_overhead + len(t.images) * per_image for t in turns
            ]
            window = choose_window(costs, is_user, budget, start)
            if window is None or window.start == start:
                return window, turns, costs
            start = window.start

    async def build(
        self,
        channel: str,
        system_prompt: str,
        reserve: int,
        multi_user: bool,
        through_row: int,
        recall: Recall = HISTORY_ONLY,
    ) -> Prompt | TooLong:
        """The prompt for answering message `through_row` (later messages are not seen yet),
        with what `recall` asks for, read with the history: its speaker's notes just before
        it and the channel's summary after the system prompt: the one shown so far, or, at a
        trim point (the prefix changes anyway), the newest one, which is shown from then on
        (so the prefix stays stable between)."""
        recalled = await self.store.recall(channel, through_row, recall)
        history, summary = recalled.history, recalled.summary
        notes = [n.text for n in recalled.notes]
        replies = await self.quotes(channel, history)
        pictures = await read_pictures(self.store, history, self._most_images())
        shown = summary.shown if summary else None
        system = with_summary(system_prompt, shown)
        fitted = await asyncio.to_thread(
            self._measured, history, replies, system, reserve, multi_user, 0, notes, pictures
        )
        if isinstance(fitted, TooLong):
            return fitted
        newest = summary.text if summary else None
        pin = fitted.start > 0 and summary is not None and bool(newest) and newest != shown
        if pin:
            system = with_summary(system_prompt, newest)
            again = await asyncio.to_thread(
                self._measured,
                history,
                replies,
                system,
                reserve,
                multi_user,
                fitted.start,
                notes,
                pictures,
            )
            if isinstance(again, TooLong):
                pin = False
            else:
                fitted = again
        window = Window(fitted.start, trimmed=fitted.start > 0)
        moved = window.start > 0
        if moved:
            await self.store.set_window_start(channel, history[window.start].row)
        if pin and summary is not None:
            await self.store.pin_summary(channel, summary.through_row)
        if fitted.doomed is not None:
            moved |= await self._doom(channel, history[fitted.doomed].row)
        speakers = tuple(
            sorted({m.author_name for m in history[window.start :] if m.role == "user"})
        )
        turns_kept = len(history) - window.start
        summarizable = recall.summary and (recalled.unsummarized or moved)
        return Prompt(
            fitted.messages,
            fitted.tokens,
            window,
            turns_kept,
            speakers,
            fitted.images,
            fitted.image_tokens,
            summarizable,
        )

    async def _doom(self, channel: str, row: int) -> bool:
        """Say which messages the next trim drops (bot.summarizer summarizes them ahead),
        when that changed; whether it did."""
        if self._doomed.get(channel) == row:
            return False
        await self.store.set_doomed(channel, row)
        self._doomed.pop(channel, None)
        self._doomed[channel] = row
        while len(self._doomed) > _DOOMED_KEPT:
            del self._doomed[next(iter(self._doomed))]
        return True

    def _measured(
        self,
        history: Sequence[StoredMessage],
        replies: Replies,
        system_prompt: str,
        reserve: int,
        multi_user: bool,
        start: int,
        notes: Sequence[str],
        pictures: Mapping[int, TurnPictures],
    ) -> _Fitted | TooLong:
        """The window from `start` on that fits with this system prompt, measured exactly
        (the text by the tokenizer, each picture shown by the projector's count). Tokenizing
        is linear in the text (a long paste takes a while): callers run it on a worker thread,
        in one trip (each trip costs a thread switch each way)."""
        last = len(history) - 1
        per_image = self.backend.info.image_tokens
        for _ in range(_CALIBRATIONS):
            system_cost = self._count(system_prompt) + self.turn_overhead + self.prompt_overhead
            budget = self.n_ctx - reserve - system_cost - self.reply_overhead
            window, turns, costs = self._fit(
                history, multi_user, replies, budget, start, notes, pictures
            )
            if window is None:
                return TooLong(costs[-1] if costs else 0, max(budget, 0))
            start = window.start
            messages = chat_messages(system_prompt, turns[start:])
            tokens = self.backend.prompt_tokens(messages)
            image_tokens = sum(len(t.images) for t in turns[start:]) * per_image
            used = len(tokens) + image_tokens
            if used + reserve <= self.n_ctx or start >= last:
                break
            # The per-turn estimate was short for this template (tokens merge differently
            # around its markers): learn the difference, then trim again with full slack.
            estimate = system_cost + sum(costs[start:]) + self.reply_overhead
            turns_seen = len(turns) - start + 1
            self.turn_overhead += max(1, -(-(used - estimate) // turns_seen))
        if used + reserve > self.n_ctx:
            return TooLong(used, self.n_ctx - reserve)
        images = turn_images(turns[start:])
        return _Fitted(start, messages, tokens, doomed(costs, budget, start), images, image_tokens)

    async def usage(self, channel: str, system_prompt: str) -> ContextUse:
        """What the channel's context uses now (system prompt + remembered turns, and the
        pictures the next prompt shows)."""
        history = await self.store.history(channel)
        multi = len({m.author_id for m in history if m.role == "user"}) > 1
        pictures = await read_pictures(self.store, history, self._most_images())
        turns = self.turns(history, multi, await self.quotes(channel, history), 0, (), pictures)
        messages = chat_messages(system_prompt, turns)
        text = len(await asyncio.to_thread(self.backend.prompt_tokens, messages))
        images = sum(len(t.images) for t in turns)
        image_tokens = images * self.backend.info.image_tokens
        return ContextUse(text + image_tokens, images, image_tokens)
