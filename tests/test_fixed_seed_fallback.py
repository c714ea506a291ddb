"""The fixed-seed lane where its prompt-cutting rule does not hold, on real llama.cpp with the
tiny GGUF (bot.model.llama_cpp.solo)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_batching import alone, chat, load, text_of

from bot.model.llama_cpp.solo import SoloLane
from bot.model.types import GenerationRequest
from bot.personas import Sampling


async def test_a_fixed_seed_channel_is_evaluated_cold_where_the_cut_rule_fails(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a model where cutting a prompt changes its logits (the load-time probe says so), a
    # fixed-seed channel reuses nothing: every turn is evaluated whole, so it stays the cold
    # reply. Forced here: on the tiny model the rule holds.
    monkeypatch.setattr(SoloLane, "_probe", lambda self: False)
    seeded = Sampling(temperature=0.8, max_tokens=20, seed=5)

    def fixed(messages: list[dict[str, str]]) -> GenerationRequest:
        return GenerationRequest(
            messages=messages, sampling=seeded, seed=5, cache_key="t", cold=True, ban_eos=True
        )

    backend = await load(tiny_model, parallel=2)
    try:
        history = chat("tea", turns=3)
        reply = await text_of(backend.start(fixed(history)))
        follow_up = [*history, {"role": "assistant", "content": reply}]
        follow_up.append({"role": "user", "content": "and the water for it?"})
        second = backend.start(fixed(follow_up))
        warm = await text_of(second)
        assert backend._engine is not None and backend._engine.solo is not None
        assert not backend._engine.solo.reuses
        assert second.result.reused_tokens == 0
    finally:
        await backend.close()
    assert [warm] == await alone(tiny_model, [fixed(follow_up)])
