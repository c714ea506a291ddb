"""Where the engine decodes a group of replies: a context, its step batch, and the bookkeeping
of the sequences in it (the KV pool, or the fixed-seed lane's single sequence)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llama_cpp._internals import LlamaContext

from bot.model.llama_cpp.batch import StepBatch
from bot.model.llama_cpp.pool import Resident


class Sequences(Protocol):
    """The sequences of one context, as the engine uses them."""

    def claim(self, key: str | None, tokens: Sequence[int], cold: bool) -> tuple[Resident, int]:
        """A sequence for a reply of `key`, and how many prompt tokens it already holds."""
        ...

    def cuts(self, resident: Resident, start: int, end: int) -> Sequence[int]:
        """Where batches evaluating prompt positions [start, end) must end (none: anywhere)."""
        ...

    def release(self, resident: Resident) -> None: ...

    def trim(self, resident: Resident, keep: int) -> None: ...

    def evict(self) -> bool:
        """Make room for a step that did not fit; False when nothing can go."""
        ...


@dataclass(eq=False, slots=True)
class Lane:
    """A context the engine decodes in: its batch, its sequences, and how many prompt tokens
    one step may hold."""

    context: LlamaContext
    batch: StepBatch
    sequences: Sequences
    chunk: int
