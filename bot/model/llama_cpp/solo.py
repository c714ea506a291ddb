"""The fixed-seed lane: a second, small context where a reply with a fixed seed is evaluated
and decoded alone, the same way every time.

Why a context of its own: on the bench model (Q4_K) a token's logits change by up to 0.3 with
where its sequence's cells lie in the KV cache and with how its prompt was cut into batches, so
a fixed seed would give another reply whenever other channels filled the shared pool
differently. Here the sequence always starts at cell 0, the prompt is evaluated in the same
chunks, and the reply one token at a time: the same seed and history give the same text, as
they did before batching. The context is opened at the first fixed-seed reply and holds one
window (n_ctx); fixed-seed replies take it one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp
from llama_cpp._internals import LlamaModel

from bot.model.llama_cpp.batch import StepBatch
from bot.model.llama_cpp.lane import Lane
from bot.model.llama_cpp.loader import PoolShape, open_context
from bot.model.llama_cpp.pool import Resident


class SoloLane:
    """The one-sequence context of fixed-seed replies, and its lane for the engine."""

    def __init__(self, model: LlamaModel, n_ctx: int, step_tokens: int, n_threads: int) -> None:
        shape = PoolShape(
            pool_tokens=n_ctx, n_seq_max=1, step_tokens=step_tokens, n_threads=n_threads
        )
        self.context = open_context(model, shape)
        self.resident = Resident(seq=0, key=None)
        self.lane = Lane(self.context, StepBatch(step_tokens), self, chunk=step_tokens)

    @property
    def busy(self) -> bool:
        return self.resident.busy

    def claim(self, key: str | None, tokens: Sequence[int], cold: bool) -> tuple[Resident, int]:
        """The sequence, emptied: a fixed-seed prompt is evaluated from its first token."""
        self.clear()
        self.resident.key = key
        self.resident.busy = True
        return self.resident, 0

    def release(self, resident: Resident) -> None:
        resident.busy = False
        if resident.forgotten:
            self.clear()

    def trim(self, resident: Resident, keep: int) -> None:
        if keep < len(resident.tokens):
            llama_cpp.llama_memory_seq_rm(self.context.memory, resident.seq, keep, -1)
            del resident.tokens[keep:]

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

    def close(self) -> None:
        self.lane.batch.close()
        self.context.close()
