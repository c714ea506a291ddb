"""Reading ahead: a channel's next prompt is read as far as it is known, before it comes.

When a reply ends, the channel's next prompt will hold that reply as the daemon stores it (its
text, stripped: bot.answering), the template's close of the reply and the opening of the next
user turn, all before anything the user writes next. The KV holds the prompt and the reply's
tokens but the last; the rest is read now, in idle time, so the next turn reads only what its
user wrote and the opening of the answer: 6 of the 26 tokens a short follow-up costs with
Qwen's ChatML (one of them the reply's last token). On a CPU, where reading a prompt token
costs about as much as generating one, that is a fifth of such a turn's first-token time.

The guess is checked against the KV token by token (ChatText.opening_tokens renders the
conversation as the next prompt will be): where the reply would tokenize differently (a model
that opened with a space, which the daemon strips), the sequence is cut there and read on from
the guess, as the next turn would. The next turn's own prompt is still compared with the KV,
so a wrong guess costs idle time, never a wrong answer.

It waits READ_AFTER_S after the last reply ended, so a message that follows at once (a burst, a
benchmark) never waits behind it; a person takes longer than that to read and answer. It reads
while the model is idle, and also between the steps of replies that are past their prompts (a
busy bot is seldom idle): never while a reply waits for its first token, and then in steps of
MOST_WHILE_BUSY tokens, a pause a streaming reply's throttled edits hide. The energy and model
time it takes go to the channel's next reply (bot.model.footprint). With the last of it, the
channel to be evicted next is copied out as a snapshot (KvPool.save_ahead), so that the turn
evicting it does not wait for that copy either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import llama_cpp

from bot.model.footprint import Accountant, ReplyFootprint
from bot.model.llama_cpp.batch import NO_KV_ROOM, StepBatch
from bot.model.llama_cpp.kv_cache import common_prefix
from bot.model.llama_cpp.pool import KvPool, Resident

READ_AFTER_S = 0.25
# Channels waiting to be read ahead (each holds its conversation's text until then).
MOST_PENDING = 32
# Tokens read ahead in one step: a turn that comes meanwhile waits for one such step at most.
MOST_PER_STEP = 64
# Between the steps of generating replies: each of them waits for such a step (~5 tokens a
# channel with ChatML: the reply's last token, its close and the next turn's opening).
MOST_WHILE_BUSY = 16

Opening = Callable[[Sequence[dict[str, str]]], list[int]]


@dataclass(eq=False, slots=True)
class Pending:
    """A channel whose next prompt is to be read ahead, as its reply left it."""

    resident: Resident
    held: int  # tokens in the sequence when the reply ended (or after the last read)
    messages: list[dict[str, str]]
    tokens: list[int] | None = None  # the next prompt's known start, once rendered


class ReadAhead:
    """The channels to read ahead, and the reading; model thread only."""

    def __init__(self, opening: Opening | None, n_ctx: int) -> None:
        self._opening = opening  # None: the backend cannot say (reading ahead is off)
        self._n_ctx = n_ctx
        self.pending: dict[str, Pending] = {}
        self.spent: dict[str, ReplyFootprint] = {}  # read ahead, for the channel's next reply
        self._since = 0.0  # when the last reply ended

    def note(
        self, key: str | None, resident: Resident, messages: Sequence[dict[str, str]], reply: str
    ) -> None:
        """A reply of channel `key` ended with the text `reply`, its KV in `resident`."""
        if self._opening is None or key is None:
            return
        said = [*messages, {"role": "assistant", "content": reply.strip()}]
        self.pending.pop(key, None)
        self.pending[key] = Pending(resident, len(resident.tokens), said)
        while len(self.pending) > MOST_PENDING:  # never idle: the oldest are evicted by now
            del self.pending[next(iter(self.pending))]
        self._since = time.monotonic()

    def drop(self, key: str | None) -> None:
        """The channel's next turn has come (or it was forgotten): nothing to read ahead."""
        if key is not None:
            self.pending.pop(key, None)

    def forget(self, forget_all: bool, keys: frozenset[str]) -> None:
        for key in list(self.pending) + list(self.spent):
            if forget_all or key in keys:
                self.pending.pop(key, None)
                self.spent.pop(key, None)

    def wait_s(self) -> float | None:
        """How long until reading ahead is due; None when there is nothing to read."""
        if not self.pending:
            return None
        return max(0.0, self._since + READ_AFTER_S - time.monotonic())

    def due(self, pool: KvPool) -> bool:
        """Reading ahead is due, or nothing is left to read and the channel to be evicted next
        is not saved (a channel still to be read ahead would be copied twice)."""
        wait = self.wait_s()
        return wait == 0 or (wait is None and pool.save_due())

    def read(
        self,
        pool: KvPool,
        batch: StepBatch,
        ctx: llama_cpp.llama_context_p,
        footprint: Accountant,
        first: Callable[[], None],
        most: int = MOST_PER_STEP,
    ) -> None:
        """`first` (the forgets to honour), then one step of reading ahead if it is due, of at
        most `most` tokens, for every pending channel whose share fits; with nothing left to
        read, the channel to be evicted next is saved ahead. If any breaks, nothing is left
        pending (the worker must not try again and again)."""
        try:
            first()
            if self.wait_s() == 0:
                self._read(pool, batch, ctx, footprint, most)
            if self.wait_s() is None:  # the last of it, and the time is still spare
                pool.save_ahead()
        except Exception:
            self.pending.clear()
            raise

    def _read(
        self,
        pool: KvPool,
        batch: StepBatch,
        ctx: llama_cpp.llama_context_p,
        footprint: Accountant,
        most: int,
    ) -> None:
        rows = self._plan(pool, min(batch.capacity, most))
        if not rows:
            return
        batch.clear()
        for resident, tokens in rows:
            batch.add_run(tokens, len(resident.tokens), resident.seq, False)
        footprint.before_step()
        cpu_started, started = time.process_time(), time.perf_counter()
        code = batch.decode(ctx)
        wall_s = time.perf_counter() - started
        if code != 0:  # no room (nothing written), or broken: the next turns read it all
            for resident, _ in rows:
                self.drop(resident.key)
                if code != NO_KV_ROOM:
                    pool.trim(resident, 0)  # it may hold part of the step
            return
        for resident, tokens in rows:  # the KV holds them now, whatever follows
            resident.tokens.extend(tokens)
            pending = self.pending.pop(resident.key)  # type: ignore[arg-type]
            pending.held = len(resident.tokens)
            pool.publish(resident)
            if pending.tokens is not None and pending.held < len(pending.tokens):
                self.pending[resident.key] = pending  # type: ignore[index]
        pool.prompt_rate.add(batch.size, wall_s)
        shares: dict[Hashable, int] = {("ahead", r.key): len(t) for r, t in rows}
        footprint.step(shares, time.process_time() - cpu_started, wall_s)
        for resident, _ in rows:
            key = resident.key
            assert key is not None
            spent = footprint.finish(("ahead", key))
            self.spent[key] = self.spent[key].add(spent) if key in self.spent else spent

    def _plan(self, pool: KvPool, budget: int) -> list[tuple[Resident, list[int]]]:
        """What each pending channel reads in this step; channels gone or changed since are
        dropped, and a sequence whose reply tokenizes otherwise is cut where it does."""
        assert self._opening is not None
        here = {id(r) for r in pool.residents}
        for key in [k for k in self.spent if not any(r.key == k for r in pool.residents)]:
            del self.spent[key]
        rows = []
        for key, pending in list(self.pending.items()):
            resident = pending.resident
            if id(resident) not in here or resident.busy or len(resident.tokens) != pending.held:
                del self.pending[key]
                continue
            if pending.tokens is None:
                try:
                    pending.tokens = self._opening(pending.messages)[: self._n_ctx - 1]
                except Exception:  # a template that cannot say: nothing to read
                    del self.pending[key]
                    continue
                pending.messages = []  # only the tokens are needed from now on
                keep = common_prefix(resident.tokens, pending.tokens)
                pool.trim(resident, keep)
                pending.held = keep
            part = pending.tokens[pending.held : pending.held + budget]
            if not part:
                del self.pending[key]
                continue
            rows.append((resident, part))
            budget -= len(part)
            if budget <= 0:
                break
        return rows
