"""Idle channels leave the KV pool while replies generate (KvPool.park), on real llama.cpp with
the tiny GGUF: their cells would widen every step's attention. Parked channels come back from
their snapshots with the same text they would have had resident."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_batching import TOPICS, alone, ask, chat, load, pool_agrees, text_of


def follow_up(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [*messages, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}]


async def test_idle_channels_are_parked_while_another_generates_and_come_back(
    tiny_model: Path,
) -> None:
    backend = await load(tiny_model, parallel=2)  # the default: every idle channel is parked
    try:
        a, b, c = (chat(topic, turns=3) for topic in TOPICS[:3])
        await text_of(backend.start(ask(a, "a")))
        await backend.ping()
        assert backend.cache_state("a").endswith("resident)")  # idle, and nothing generates
        for messages, key in ((b, "b"), (c, "c")):
            await text_of(backend.start(ask(messages, key)))
        # While b generated, a was saved and dropped; so was b while c generated.
        assert backend.stats().resident == 1
        assert backend.cache_state("a").endswith("MB)")
        assert backend.cache_state("b").endswith("MB)")
        assert backend.cache_state("c").endswith("resident)")
        # Both come back from their snapshots, generating side by side.
        back = [backend.start(ask(follow_up(m), k)) for m, k in ((a, "a"), (b, "b"))]
        texts = await asyncio.gather(*(text_of(g) for g in back))
        for generation, messages in zip(back, (a, b), strict=True):
            assert generation.result.reused_tokens >= len(backend.prompt_tokens(messages)) - 1
        assert await pool_agrees(backend)
    finally:
        await backend.close()
    assert texts == await alone(tiny_model, [ask(follow_up(a), "a"), ask(follow_up(b), "b")])


async def test_idle_channels_within_an_allowance_stay(tiny_model: Path) -> None:
    backend = await load(tiny_model, parallel=2, idle_cells=100_000)
    try:
        for topic in TOPICS[:3]:
            await text_of(backend.start(ask(chat(topic, turns=3), topic)))
        assert backend.stats().resident == 3
    finally:
        await backend.close()


async def test_without_a_snapshot_budget_nothing_is_parked(tiny_model: Path) -> None:
    # Parking there would mean losing the channel's KV, not saving it.
    backend = await load(tiny_model, parallel=2, idle_cells=0, kv_cache_mb=0)
    try:
        for topic in TOPICS[:3]:
            await text_of(backend.start(ask(chat(topic, turns=3), topic)))
        assert backend.stats().resident == 3
        assert all(backend.cache_state(t).endswith("resident)") for t in TOPICS[:3])
    finally:
        await backend.close()


async def test_a_channel_is_parked_only_into_free_room(tiny_model: Path) -> None:
    # Parking must not push another channel's snapshot out: with room for one, the second
    # idle channel stays resident while the third generates.
    backend = await load(tiny_model, parallel=2)
    try:
        a, b, c = chat("water", turns=3), chat("fire", turns=6), chat("cats", turns=3)
        await text_of(backend.start(ask(a, "a")))
        await text_of(backend.start(ask(b, "b")))  # a is parked meanwhile
        saved = backend._cache.peek("a")
        assert saved is not None
        backend._cache.budget_bytes = saved.nbytes * 3 // 2  # no room for b's longer state
        await text_of(backend.start(ask(c, "c")))
        assert "a" in backend._cache
        assert backend.cache_state("b").endswith("resident)")
        back = backend.start(ask(follow_up(b), "b"))
        await text_of(back)
        assert back.result.reused_tokens >= len(backend.prompt_tokens(b)) - 1
        assert await pool_agrees(backend)
    finally:
        await backend.close()
