"""Saving ahead (bot.model.llama_cpp.pool.save_ahead): the channel to be evicted next is copied
out in spare time, so that a new channel taking its sequence does not wait for the copy. In
idle time after reading ahead; and between the steps of others' replies, as the channel to be
evicted next changes when others start generating; but not while it waits to be read ahead, as
its KV is about to change. On the real tiny GGUF, a window per slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import llama_cpp
import pytest
from test_read_ahead import QUESTION, engine_of, going_on, read, reply

from bot.model.llama_cpp import ahead
from bot.model.llama_cpp.pool import KvPool, Resident
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.recording_backend import RecordingBackend


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.2)


async def test_the_channel_evicted_next_is_saved_ahead_so_a_new_turn_does_not_wait_for_the_copy(
    tiny_model: Path, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window per slot: channels stay resident until a new one needs the sequence (the
    # unified pool parks idle channels while replies generate instead).
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=2, kv_layout="slots", kv_cache_mb=64
    )
    try:
        await saved_ahead(backend, monkeypatch)
    finally:
        await backend.close()


async def saved_ahead(backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of(backend)
    for asked in range(len(engine.pool._free)):  # every sequence holds a channel
        await reply(backend, QUESTION, f"c{asked}")
        await read(backend)
    oldest = next(r for r in engine.pool.residents if r.key == "c0")
    saved = engine.pool.snapshots.peek("c0")
    assert saved is not None and saved.tokens == tuple(oldest.tokens)  # read ahead, then saved
    copies = []
    get_data = llama_cpp.llama_state_seq_get_data

    def counting(*args: object) -> int:
        copies.append(args)
        return get_data(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(llama_cpp, "llama_state_seq_get_data", counting)
    monkeypatch.setattr(ahead, "READ_AFTER_S", 3600.0)  # nothing is copied in spare time now
    await reply(backend, [*QUESTION[:1], {"role": "user", "content": "a new one"}], "new")
    assert not any(r.key == "c0" for r in engine.pool.residents)  # evicted for the new one
    # Without copying it again (the channel next to evict now is copied between the new
    # reply's steps: below).
    assert not [c for c in copies if c[3] == oldest.seq]
    assert engine.pool.snapshots.peek("c0") is saved
    # Its next turn restores it, what was read ahead included.
    said = going_on(QUESTION, engine_generation(backend, "c0"))
    again = await reply(backend, [*said, {"role": "user", "content": "more please"}], "c0")
    assert again.result.reused_tokens == len(backend._text.opening_tokens(said))
    assert engine.pool.snapshots.peek("c0") is None  # resident again: the fresher copy


def engine_generation(backend: RecordingBackend, key: str) -> Generation:
    return next(g for g in backend.generations if g.request.cache_key == key)


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


async def test_a_copy_llama_cpp_fails_is_not_tried_again_at_every_step(
    both_resident: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_of(both_resident)
    (c1,) = [r for r in engine.pool.residents if r.key == "c1"]
    tried = []

    def failing(ctx: object, dst: object, size: int, seq: int) -> int:
        tried.append(seq)
        return 0  # what llama_state_seq_get_data returns when it fails

    monkeypatch.setattr(llama_cpp, "llama_state_seq_get_data", failing)
    assert (await drained(started(both_resident, "c0", 200))).result.finish == "length"
    # c1, the one to evict next while c0 generates, was tried once, not at each of 200 steps.
    assert tried.count(c1.seq) == 1
    assert engine.pool.snapshots.peek("c1") is None

    def cut_and_grown_back() -> bool:  # to the same length, with another last token
        lane, held = engine.shared, len(c1.tokens)
        engine.pool.trim(c1, held - 1)
        lane.batch.clear()
        lane.batch.add(c1.tokens[-1] + 1, held - 1, c1.seq, False)
        assert lane.batch.decode(lane.context.ctx) == 0
        c1.tokens.append(c1.tokens[-1] + 1)
        return engine.pool.save_due()

    assert await both_resident._call(cut_and_grown_back)  # other tokens: worth trying again
    assert tried.count(c1.seq) == 1
    # Evicting it still tries (and, failing, drops it: its next turn reads it again).
    await drained(started(both_resident, "new", 2))
    assert tried.count(c1.seq) == 2 and not any(r.key == "c1" for r in engine.pool.residents)
