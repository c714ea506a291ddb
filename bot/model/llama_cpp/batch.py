"""One step's tokens for llama_decode: each with its position, its sequence, and whether its
logits are wanted (a sequence's next token is drawn from them)."""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

# llama_decode's answer when the KV pool has no room for the batch; nothing was changed.
NO_KV_ROOM = 1


class StepBatch:
    """A reusable llama_batch of up to `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.size = 0

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append a token; its index in the batch (where its logits will be)."""
        i = self.size
        if i >= self.capacity:
            raise OverflowError(f"a step holds at most {self.capacity} tokens")
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
        self.size = i + 1
        return i

    def add_run(self, tokens: Sequence[int], start: int, seq: int, last_logits: bool) -> int:
        """Append consecutive prompt tokens from position `start`; the last one's index."""
        for offset, token in enumerate(tokens):
            self.add(token, start + offset, seq, False)
        if last_logits:
            self._batch.logits[self.size - 1] = True
        return self.size - 1

    def decode(self, ctx: llama_cpp.llama_context_p) -> int:
        """llama_decode's return code: 0 done, NO_KV_ROOM, anything else an error."""
        self._batch.n_tokens = self.size
        return int(llama_cpp.llama_decode(ctx, self._batch))

    def close(self) -> None:
        if self.capacity:
            llama_cpp.llama_batch_free(self._batch)
            self.capacity = 0
