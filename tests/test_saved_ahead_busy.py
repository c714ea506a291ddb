"""The channel to be evicted next changes when others start generating; it is then saved ahead
between their steps (bot.model.llama_cpp.pool.save_ahead), so that a new channel arriving while
they stream does not wait for its copy; but not while it waits to be read ahead, as its KV is
about to change. On the real tiny GGUF, a window per slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_read_ahead import QUESTION, engine_of, read, reply

from bot.model.llama_cpp import ahead
from bot.model.llama_cpp.pool import KvPool, Resident
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.recording_backend import RecordingBackend

ASKED = [*QUESTION[:1], {"role": "user", "content": "and more " * 10}]


@pytest.fixture
async def both_resident(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RecordingBackend]:
    """Two sequences, each holding a channel read ahead (c0, then c1); then no more reading
    ahead, only saving."""
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.0)
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=2, kv_layout="slots", kv_cache_mb=64
    )
    try:
        for key in ("c0", "c1"):
            await reply(backend, QUESTION, key)
            await read(backend)
        monkeypatch.setattr(ahead, "READ_AFTER_S", 3600.0)
        yield backend
    finally:
        await backend.close()


def copies_made(backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Each channel copied out from now on, with the channels generating meanwhile."""
    engine, copies, stash = engine_of(backend), [], KvPool._stash

    def recording(pool: KvPool, resident: Resident) -> None:
        copies.append((resident.key, [s.generation.request.cache_key for s in engine.streams]))
        stash(pool, resident)

    monkeypatch.setattr(KvPool, "_stash", recording)
    return copies


def started(backend: RecordingBackend, key: str, tokens: int) -> Generation:
    sampling = Sampling(max_tokens=tokens)
    return backend.start(GenerationRequest(ASKED, sampling, seed=1, cache_key=key, ban_eos=True))


async def drained(generation: Generation) -> Generation:
    _ = [piece async for piece in generation]
    return generation


async def test_the_channel_next_to_evict_is_saved_between_the_steps_of_others(
    both_resident: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_of(both_resident)
    assert engine.pool.snapshots.peek("c1") is None  # c0 was the one to evict next
    copies = copies_made(both_resident, monkeypatch)
    assert (await drained(started(both_resident, "c0", 200))).result.finish == "length"
    # c0 generating, c1 became the one to evict next: copied while c0 streamed.
    assert ("c1", ["c0"]) in copies
    (resident,) = [r for r in engine.pool.residents if r.key == "c1"]
    saved = engine.pool.snapshots.peek("c1")
    assert saved is not None and saved.tokens == tuple(resident.tokens)
    assert copies.count(("c1", ["c0"])) == 1  # once: a copy that holds is not made again


async def test_a_channel_still_to_be_read_ahead_is_not_saved_before_it_is_read(
    both_resident: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = copies_made(both_resident, monkeypatch)
    short, long = started(both_resident, "c0", 2), started(both_resident, "c1", 200)
    await drained(short)
    assert (await drained(long)).result.finish == "length"
    assert "c0" in engine_of(both_resident).ahead.pending  # ended first: next to evict, unread
    assert not [c for c in copies if c[0] == "c0"]
