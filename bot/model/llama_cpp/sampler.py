"""The sampler chain of one reply: how the next token is drawn from the logits.

Built once per reply and used token by token, instead of `Llama.generate`'s keyword plumbing
per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_cpp._internals import LlamaSampler

from bot.personas import Sampling

# llama-cpp-python's default window for the repeat penalty.
PENALTY_LAST_N = 64


def sampler_chain(
    sampling: Sampling, seed: int, n_vocab: int, banned: Sequence[int] = ()
) -> LlamaSampler:
    """The same chain llama-cpp-python builds for create_completion (penalties, top-k, top-p,
    min-p, temperature, seeded draw), plus an optional ban of `banned` tokens done in C.
    The caller closes it."""
    chain = LlamaSampler()
    if banned:
        chain.add_logit_bias(n_vocab, dict.fromkeys(banned, float("-inf")))
    chain.add_penalties(n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0)
    if sampling.temperature == 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(sampling.top_k)
    chain.add_top_p(sampling.top_p, 1)
    chain.add_min_p(sampling.min_p, 1)
    chain.add_temp(sampling.temperature)
    chain.add_dist(seed)
    return chain
