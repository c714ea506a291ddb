"""The sampler of one reply: how the next token is drawn from the logits.

Built once per reply and used token by token, instead of `Llama.generate`'s keyword plumbing
per token.
"""

from __future__ import annotations

import ctypes
from collections import Counter, deque
from collections.abc import Sequence

import llama_cpp
from llama_cpp._internals import LlamaContext, LlamaSampler

from bot.personas import Sampling

# llama-cpp-python's default window for the repeat penalty.
PENALTY_LAST_N = 64


class ReplySampler:
    """llama-cpp-python's create_completion chain (repeat penalty, top-k, top-p, min-p,
    temperature, seeded draw), plus an optional ban of `banned` tokens, done in C, except the
    repeat penalty: llama.cpp's looks up each of the vocabulary's candidates in its window
    (0.5 ms a token at 152k, where the rest of the chain takes 0.1 ms). It changes only the
    window's tokens, so it is applied to those alone, in place, with the same float32
    arithmetic: the same logits, the same draws (tests/test_sampler.py). Close it after use."""

    def __init__(
        self, sampling: Sampling, seed: int, n_vocab: int, banned: Sequence[int] = ()
    ) -> None:
        # As C stores it: a float32 (float32 × float32 is exact in a double, and a double's
        # quotient rounded to float32 is float32's own; so the Python arithmetic below is).
        self._penalty = ctypes.c_float(sampling.repeat_penalty).value
        self._window: deque[int] = deque()
        self._counts: Counter[int] = Counter()
        self.chain = c_chain(sampling, seed, n_vocab, banned)

    def sample(self, ctx: LlamaContext, idx: int) -> int:
        """Draw the token for the logits of batch row `idx` (which it changes), and take it
        into the penalty's window."""
        if self._penalty != 1.0 and self._counts:
            logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
            for token in self._counts:
                logit = logits[token]
                logits[token] = logit * self._penalty if logit <= 0 else logit / self._penalty
        token = self.chain.sample(ctx, idx)
        self._accept(token)
        return token

    def _accept(self, token: int) -> None:
        if len(self._window) == PENALTY_LAST_N:
            oldest = self._window.popleft()
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]
        self._window.append(token)
        self._counts[token] += 1

    def close(self) -> None:
        self.chain.close()


def c_chain(
    sampling: Sampling, seed: int, n_vocab: int, banned: Sequence[int], penalty_last_n: int = 0
) -> LlamaSampler:
    """The chain in C: the ban, then (with `penalty_last_n`, as ReplySampler's own penalty is
    checked against it) llama.cpp's repeat penalty, top-k, top-p, min-p, temperature, draw."""
    chain = LlamaSampler()
    if banned:
        chain.add_logit_bias(n_vocab, dict.fromkeys(banned, float("-inf")))
    if penalty_last_n:
        chain.add_penalties(n_vocab, penalty_last_n, sampling.repeat_penalty, 0.0, 0.0)
    if sampling.temperature == 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(sampling.top_k)
    chain.add_top_p(sampling.top_p, 1)
    chain.add_min_p(sampling.min_p, 1)
    chain.add_temp(sampling.temperature)
    chain.add_dist(seed)
    return chain
