"""Builds the prompt for one channel: stored history → turns → token-budget window → tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bot.bounded import SizedCache, text_bytes
from bot.model.backend import Backend
from bot.prompt.window import Turn, Window, chat_messages, choose_window, speaker_text
from bot.store import Store, StoredMessage

_FALLBACK_OVERHEAD = 8
# What the remembered token counts may hold of message texts (the texts are the keys).
COUNTS_MAX_BYTES = 8 * 1024 * 1024
# Rounds of "estimate, measure exactly, correct the per-turn overhead" before giving up.
_CALIBRATIONS = 4


@dataclass(frozen=True, slots=True)
class Prompt:
    """The prompt for one answer: chat messages, their tokens, and what the window kept."""

    messages: list[dict[str, str]]
    tokens: list[int]
    window: Window
    turns_kept: int
    speakers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TooLong:
    """The message being answered does not fit in the context even alone."""

    tokens: int
    limit: int


class ContextBuilder:
    """Knows the model's tokenizer and context size; the trimming itself is pure
    (bot.prompt.window.choose_window)."""

    def __init__(self, backend: Backend, store: Store, n_ctx: int) -> None:
        self.backend = backend
        self.store = store
        self.n_ctx = n_ctx
        # Token counts of message texts, so each turn is tokenized once, not every turn;
        # bounded by bytes, as one text may be a million times longer than another.
        self.counts: SizedCache[str, int] = SizedCache(
            COUNTS_MAX_BYTES, lambda text, _: text_bytes(text)
        )
        self.turn_overhead = self._overhead(add_generation_prompt=False)
        self.reply_overhead = self._overhead(add_generation_prompt=True) - self.turn_overhead

    def _overhead(self, add_generation_prompt: bool) -> int:
        """Template tokens around one message (role markers, separators)."""
        try:
            text = self.backend.render(
                [{"role": "user", "content": "x"}], add_generation_prompt=add_generation_prompt
            )
            return max(len(self.backend.tokenize(text)) - self._count("x"), 0)
        except Exception:  # an unusual template: a safe guess
            return _FALLBACK_OVERHEAD

    def _count(self, text: str) -> int:
        counted = self.counts.get(text)
        if counted is None:
            counted = self.backend.count_tokens(text)
            self.counts.put(text, counted)
        return counted

    def turns(self, history: Sequence[StoredMessage], multi_user: bool) -> list[Turn]:
        return [
            Turn("user", speaker_text(m.author_name, m.text, multi_user))
            if m.role == "user"
            else Turn("assistant", m.text)
            for m in history
        ]

    async def build(
        self, channel: str, system_prompt: str, reserve: int, multi_user: bool, through_row: int
    ) -> Prompt | TooLong:
        """The prompt for answering message `through_row` (later messages are not seen yet)."""
        history = await self.store.history(channel, through_row=through_row)
        turns = self.turns(history, multi_user)
        is_user = [t.role == "user" for t in turns]
        # Tokenizing is linear in the text (a long paste takes a while): off the event loop.
        texts = await asyncio.to_thread(lambda: [self._count(t.text) for t in turns])
        start, last = 0, len(turns) - 1
        for _ in range(_CALIBRATIONS):
            system_cost = self._count(system_prompt) + self.turn_overhead
            budget = self.n_ctx - reserve - system_cost - self.reply_overhead
            costs = [n + self.turn_overhead for n in texts]
            window = choose_window(costs, is_user, budget, start)
            if window is None:
                return TooLong(costs[-1] if costs else 0, max(budget, 0))
            start = window.start
            messages = chat_messages(system_prompt, turns[start:])
            tokens = await asyncio.to_thread(self.backend.prompt_tokens, messages)
            if len(tokens) + reserve <= self.n_ctx or start >= last:
                break
            # The per-turn estimate was short for this template (tokens merge differently
            # around its markers): learn the difference, then trim again with full slack.
            estimate = system_cost + sum(costs[start:]) + self.reply_overhead
            turns_seen = len(turns) - start + 1
            self.turn_overhead += max(1, -(-(len(tokens) - estimate) // turns_seen))
        window = Window(start, trimmed=start > 0)
        if len(tokens) + reserve > self.n_ctx:
            return TooLong(len(tokens), self.n_ctx - reserve)
        if window.start > 0:
            await self.store.set_window_start(channel, history[window.start].row)
        speakers = tuple(
            sorted({m.author_name for m in history[window.start :] if m.role == "user"})
        )
        return Prompt(messages, tokens, window, len(turns) - window.start, speakers)

    async def usage(self, channel: str, system_prompt: str) -> int:
        """Tokens the channel's context uses now (system prompt + remembered turns)."""
        history = await self.store.history(channel)
        multi = len({m.author_id for m in history if m.role == "user"}) > 1
        messages = chat_messages(system_prompt, self.turns(history, multi))
        return len(await asyncio.to_thread(self.backend.prompt_tokens, messages))
