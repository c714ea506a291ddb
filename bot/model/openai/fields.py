"""What a request body says besides its prompt or messages, the same on /v1/completions and
/v1/chat/completions: sampling, seed, stop strings, streaming, the model's name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bot.model.types import GenerationRequest

# Enough to rule a token out on any server (OpenAI's logit_bias range is -100..100).
BANNED = -100


def shared_fields(
    request: GenerationRequest, model: str | None, eog_tokens: Callable[[], Sequence[int]]
) -> dict[str, Any]:
    """The body's other fields; `eog_tokens` (the vocabulary's end-of-generation tokens) is
    asked only for a request that bans them."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": request.seed,
        "stream": True,
        # A last chunk with token counts (llama-server, vLLM); others ignore it.
        "stream_options": {"include_usage": True},
        # llama.cpp servers' sampling fields (vLLM knows top_k and min_p as well).
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
    }
    if model:
        body["model"] = model
    if request.stop:
        body["stop"] = list(request.stop)
    if request.cold:
        body["cache_prompt"] = False  # llama-server: evaluate afresh, so a seed reproduces
    if request.ban_eos:
        body["logit_bias"] = {str(t): BANNED for t in eog_tokens()}
    return body
