"""The channel to be evicted next changes when others start generating; it is then saved ahead
between their steps (bot.model.llama_cpp.pool.save_ahead), so that a new channel arriving while
they stream does not wait for its copy. On the real tiny GGUF, a window per slot."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_read_ahead import QUESTION, engine_of, read, reply

from bot.model.llama_cpp import ahead
from bot.model.llama_cpp.pool import KvPool, Resident
from bot.model.types import GenerationRequest
from bot.personas import Sampling
from support.recording_backend import RecordingBackend


async def test_the_channel_next_to_evict_is_saved_between_the_steps_of_others(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.0)
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=2, kv_layout="slots", kv_cache_mb=64
    )
    try:
        engine = engine_of(backend)
        for key in ("c0", "c1"):  # both sequences hold a channel
            await reply(backend, QUESTION, key)
            await read(backend)
        assert engine.pool.snapshots.peek("c1") is None  # c0 was the one to evict next
        copies: list[tuple[str | None, list[str | None]]] = []
        stash = KvPool._stash

        def recording(pool: KvPool, resident: Resident) -> None:
            copies.append((resident.key, [s.generation.request.cache_key for s in engine.streams]))
            stash(pool, resident)

        monkeypatch.setattr(KvPool, "_stash", recording)
        monkeypatch.setattr(ahead, "READ_AFTER_S", 3600.0)  # no reading ahead: only saving
        asked = [*QUESTION[:1], {"role": "user", "content": "and more " * 10}]
        request = GenerationRequest(
            asked, Sampling(max_tokens=200), seed=1, cache_key="c0", ban_eos=True
        )
        generation = backend.start(request)
        _ = [piece async for piece in generation]
        assert generation.result.finish == "length"
        # c0 generating, c1 became the one to evict next: copied while c0 streamed.
        assert ("c1", ["c0"]) in copies
        (resident,) = [r for r in engine.pool.residents if r.key == "c1"]
        saved = engine.pool.snapshots.peek("c1")
        assert saved is not None and saved.tokens == tuple(resident.tokens)
        assert copies.count(("c1", ["c0"])) == 1  # once: a copy that holds is not made again
    finally:
        await backend.close()


async def test_a_channel_still_to_be_read_ahead_is_not_saved_before_it_is_read(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its KV changes when it is read ahead: saving it before would copy it twice.
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.0)
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=2, kv_layout="slots", kv_cache_mb=64
    )
    try:
        engine = engine_of(backend)
        for key in ("c0", "c1"):
            await reply(backend, QUESTION, key)
            await read(backend)
        monkeypatch.setattr(ahead, "READ_AFTER_S", 3600.0)  # c0 stays to be read ahead
        copies: list[str | None] = []
        stash = KvPool._stash

        def recording(pool: KvPool, resident: Resident) -> None:
            copies.append(resident.key)
            stash(pool, resident)

        monkeypatch.setattr(KvPool, "_stash", recording)
        asked = [*QUESTION[:1], {"role": "user", "content": "and more " * 10}]
        short = GenerationRequest(asked, Sampling(max_tokens=2), seed=1, cache_key="c0")
        long = GenerationRequest(
            asked, Sampling(max_tokens=200), seed=1, cache_key="c1", ban_eos=True
        )
        first, other = backend.start(short), backend.start(long)
        _ = [piece async for piece in first]
        _ = [piece async for piece in other]
        assert other.result.finish == "length"
        assert "c0" in engine.ahead.pending  # c0 ended first: the one to evict next, unread
        assert "c0" not in copies
    finally:
        await backend.close()
