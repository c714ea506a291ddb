"""The fixed-seed lane: a second, small context where a reply with a fixed seed is evaluated
and decoded alone, the same way every time.

Why a context of its own: on the bench model (Q4_K) a token's logits change by up to 0.3 with
where its sequence's cells lie in the KV cache and with how its prompt was cut into batches, so
a fixed seed would give another reply whenever other channels filled the shared pool
differently. Here the sequence always starts at cell 0, the prompt is evaluated in batches cut
by one rule (bot.model.llama_cpp.pieces), the reply one token at a time: the same seed and
history give the same text. When a probe at opening shows that the rule holds on the loaded
model, a channel's next fixed-seed turn keeps what its previous prompt left in the lane and
evaluates only the rest (the previous reply included); otherwise every turn is evaluated from
scratch. The context is opened at the first fixed-seed reply and holds one window (n_ctx);
fixed-seed replies take it one at a time.

What it costs: a step of its own for each of its tokens (a whole llama_decode per token, where a
reply sharing a step adds ~0.65 ms to it), taken in turn with the shared steps, which then come
half as often; its previous reply evaluated again each turn (it was decoded a token at a time),
and the whole prompt whenever another fixed-seed channel used the lane in between; and the
second context's memory (one window of KV).
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Sequence

import llama_cpp
from llama_cpp._internals import LlamaModel

from bot.model.llama_cpp.batch import StepBatch
from bot.model.llama_cpp.kv_cache import common_prefix
from bot.model.llama_cpp.lane import Lane
from bot.model.llama_cpp.loader import PoolShape, open_context
from bot.model.llama_cpp.pieces import MIN_PIECE, can_cut, cuts, reuse_point
from bot.model.llama_cpp.pool import Resident

# The probe's prompt, and two ways of cutting it by the rule (ends of batches).
PROBE_TOKENS = 112
PROBE_CUTS = ((PROBE_TOKENS,), (36, 76, PROBE_TOKENS), (40, PROBE_TOKENS))


class SoloLane:
    """The one-sequence context of fixed-seed replies, and its lane for the engine."""

    def __init__(self, model: LlamaModel, n_ctx: int, pool: PoolShape) -> None:
        """One window of the pool's context, with its threads, steps and KV type."""
        shape = dataclasses.replace(pool, pool_tokens=n_ctx, n_seq_max=1)
        step_tokens = shape.step_tokens
        self.context, _ = open_context(model, shape)
        self.resident = Resident(seq=0, key=None)
        self.lane = Lane(self.context, StepBatch(step_tokens), self, chunk=step_tokens)
        self._n_vocab = model.n_vocab()
        self._step = step_tokens
        self._prompt = 0  # tokens of the prompt being answered
        self._kept = 0  # leading tokens whose KV was evaluated by the rule
        self.reuses = can_cut(step_tokens) and self._probe()

    @property
    def busy(self) -> bool:
        return self.resident.busy

    def claim(self, key: str | None, tokens: Sequence[int], cold: bool) -> tuple[Resident, int]:
        """The sequence, holding what the channel's previous prompt left that this prompt can
        reuse (nothing unless the rule holds here)."""
        resident = self.resident
        reuse = 0
        # The rule does not cover a picture's decode or the batches cut around it: a prompt
        # with pictures is evaluated whole.
        if self.reuses and key is not None and resident.key == key and min(tokens) >= 0:
            shared = common_prefix(resident.tokens[: self._kept], tokens)
            reuse = reuse_point(shared, len(tokens))
        if reuse:
            self.trim(resident, reuse)
        else:
            self.clear()
        resident.key = key
        resident.busy = True
        self._prompt = len(tokens)
        return resident, reuse

    def cuts(self, resident: Resident, start: int, end: int) -> Sequence[int]:
        return cuts(start, end, self._step) if self.reuses else ()

    def release(self, resident: Resident) -> None:
        resident.busy = False
        if resident.forgotten:
            self.clear()
            return
        # Only the prompt was evaluated by the rule (the reply a token at a time), and only a
        # prompt of one batch or more (a shorter batch is not covered by the rule).
        evaluated = min(self._prompt, len(resident.tokens))
        pictures = bool(resident.tokens) and min(resident.tokens) < 0
        self._kept = evaluated if evaluated >= MIN_PIECE and not pictures else 0

    def trim(self, resident: Resident, keep: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.context.memory, resident.seq, keep, -1)  # as KvPool.trim
        del resident.tokens[keep:]
        self._kept = min(self._kept, keep)

    def evict(self) -> bool:
        return False  # one window: a reply always fits

    def forget(self, forget_all: bool, keys: frozenset[str]) -> None:
        resident = self.resident
        if forget_all or resident.key in keys:
            if resident.busy:
                resident.forgotten = True
            else:
                self.clear()

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.context.memory, True)
        self.resident.tokens.clear()
        self.resident.key = None
        self.resident.forgotten = False
        self._kept = 0

    def close(self) -> None:
        self.lane.batch.close()
        self.context.close()

    def _probe(self) -> bool:
        """Whether cutting a prompt by the rule gives bit-identical logits on this model."""
        tokens = [(self._n_vocab // 3 + 7 * i) % self._n_vocab for i in range(PROBE_TOKENS)]
        seen = {self._evaluate(tokens, ends) for ends in PROBE_CUTS}
        self.clear()
        return len(seen) == 1 and None not in seen

    def _evaluate(self, tokens: list[int], ends: Sequence[int]) -> bytes | None:
        """The last token's logits after evaluating `tokens` from scratch in batches ending at
        `ends` (None if llama.cpp refused)."""
        self.clear()
        batch, ctx = self.lane.batch, self.context.ctx
        start = 0
        for end in ends:
            batch.clear()
            last = batch.add_run(tokens[start:end], start, 0, end == len(tokens))
            if batch.decode(ctx) != 0:
                return None
            start = end
        logits = llama_cpp.llama_get_logits_ith(ctx, last)
        return ctypes.string_at(logits, self._n_vocab * ctypes.sizeof(ctypes.c_float))
