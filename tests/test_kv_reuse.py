"""Per-channel KV reuse with the real llama.cpp backend: warm turns, the byte budget, and
prompt stability."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.llama_cpp.kv_cache import Rate, Snapshot, SnapshotCache, common_prefix, restore_wins
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.daemons import ask, daemon_for
from support.persona_files import only_persona
from support.recording_backend import RecordingBackend


@pytest.fixture
async def backend(tiny_model: Path) -> AsyncIterator[RecordingBackend]:
    loaded = await RecordingBackend.load(tiny_model, n_ctx=4096, n_threads=2, kv_cache_mb=64)
    yield loaded
    await loaded.close()


@pytest.fixture
async def one_sequence(tiny_model: Path) -> AsyncIterator[RecordingBackend]:
    """Room for one channel in the pool: every other channel's turn evicts it to a snapshot."""
    loaded = await RecordingBackend.load(
        tiny_model, n_ctx=4096, n_threads=2, kv_cache_mb=64, parallel=1, resident=0
    )
    yield loaded
    await loaded.close()


def conversation(channel: str, turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": f"You talk in channel {channel}."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} about water and fire " * 8})
        messages.append({"role": "assistant", "content": f"answer {i} we can help you " * 8})
    messages.append({"role": "user", "content": "and now?"})
    return messages


async def run(
    backend: LlamaCppBackend, messages: list[dict[str, str]], key: str | None
) -> Generation:
    req = GenerationRequest(
        messages=messages, sampling=Sampling(max_tokens=4), seed=1, cache_key=key
    )
    generation = backend.start(req)
    _ = [d async for d in generation]
    return generation


@pytest.mark.parametrize("idle_cells", [10**6, 0])
async def test_interleaved_channels_stay_warm(tiny_model: Path, idle_cells: int) -> None:
    # Resident in the pool when idle channels may stay there (10**6 cells), else parked as a
    # snapshot while the other channel generates (tests/test_parking.py): warm either way.
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=4096, n_threads=2, kv_cache_mb=64, idle_cells=idle_cells
    )
    try:
        a, b = conversation("a", 20), conversation("b", 20)
        await run(backend, a, "a")
        await run(backend, b, "b")
        if idle_cells:
            assert backend.cache_state("a").endswith("tokens resident)")
            assert "a" not in backend._cache  # nothing was copied out
        else:
            assert "a" in backend._cache
        follow_up = [*a, {"role": "assistant", "content": "ok"}]
        follow_up.append({"role": "user", "content": "more"})
        generation = await run(backend, follow_up, "a")
        previous = len(backend.prompt_tokens(a))
        assert generation.result.reused_tokens >= previous - 1
        assert generation.result.prompt_tokens - generation.result.reused_tokens < 40
    finally:
        await backend.close()


async def test_evicted_channels_are_saved_and_stay_warm(one_sequence: RecordingBackend) -> None:
    backend = one_sequence
    a, b = conversation("a", 20), conversation("b", 20)
    await run(backend, a, "a")
    await run(backend, b, "b")  # evicts a from the pool: a is saved
    assert "a" in backend._cache and backend.cache_state("a").startswith("warm")
    follow_up = [*a, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    generation = await run(backend, follow_up, "a")
    previous = len(backend.prompt_tokens(a))
    assert generation.result.reused_tokens >= previous - 1
    assert generation.result.prompt_tokens - generation.result.reused_tokens < 40


async def test_without_a_cache_an_evicted_channel_is_cold(tiny_model: Path) -> None:
    backend = await LlamaCppBackend.load(
        tiny_model, n_ctx=4096, n_threads=2, kv_cache_mb=0, parallel=1, resident=0
    )
    try:
        a, b = conversation("a", 20), conversation("b", 20)
        await run(backend, a, "a")
        await run(backend, b, "b")
        assert backend.cache_state("a") == "cold"
        follow_up = [*a, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "x"}]
        generation = await run(backend, follow_up, "a")
        assert generation.result.reused_tokens < 20  # only the shared template start
    finally:
        await backend.close()


@pytest.mark.slow  # twelve conversations of 25 turns: half a minute
async def test_the_byte_budget_is_kept(tiny_model: Path) -> None:
    backend = await LlamaCppBackend.load(
        tiny_model, n_ctx=4096, n_threads=2, kv_cache_mb=1, parallel=1, resident=0
    )
    try:
        for i in range(12):
            await run(backend, conversation(f"c{i}", 25), f"c{i}")
            assert backend._cache.total_bytes <= 2**20
        assert 1 <= len(backend._cache) < 11  # some kept, the oldest evicted
        assert "c0" not in backend._cache
        kept = [s for i in range(12) if (s := backend._cache.peek(f"c{i}"))]
        assert len(kept) == len(backend._cache)
        assert sum(s.nbytes for s in kept) == backend._cache.total_bytes
    finally:
        await backend.close()


async def test_restored_state_gives_the_same_logits_path(one_sequence: RecordingBackend) -> None:
    """A restored snapshot must hold exactly what evaluating the prompt would: with greedy
    sampling the warm and the cold continuation agree."""
    backend = one_sequence
    greedy = Sampling(temperature=0.0, max_tokens=12)
    a = conversation("a", 10)

    async def greedy_run(key: str | None, cold: bool) -> str:
        req = GenerationRequest(messages=a, sampling=greedy, seed=1, cache_key=key, cold=cold)
        generation = backend.start(req)
        return "".join([d async for d in generation])

    await greedy_run("a", cold=False)  # a's state is in the pool
    await run(backend, conversation("b", 10), "b")  # ... then saved as a snapshot
    assert "a" in backend._cache
    warm = await greedy_run("a", cold=False)
    assert backend.generations[-1].result.reused_tokens > 100
    cold = await greedy_run("a", cold=True)  # evaluated from scratch
    assert warm == cold


async def test_forget_drops_cached_state(backend: RecordingBackend) -> None:
    await run(backend, conversation("a", 10), "a")
    await run(backend, conversation("b", 10), "b")
    await backend.forget("a")
    assert backend.cache_state("a") == "cold"
    assert backend.cache_state("b").startswith("warm")
    await backend.forget()
    assert backend.cache_state("b") == "cold" and len(backend._cache) == 0
    generation = await run(backend, conversation("b", 10), "b")
    assert generation.result.reused_tokens == 0


# -- pure parts ---------------------------------------------------------------------------------


def snap(n: int) -> Snapshot:
    return Snapshot(tuple(range(n)), np.zeros(n, np.uint8))


def test_snapshot_cache_is_lru_within_budget() -> None:
    cache = SnapshotCache(100)
    assert cache.put("a", snap(40)) and cache.put("b", snap(40))
    cache.peek("a")
    assert cache.put("c", snap(40))  # evicts the least recently stored: a
    assert ("a" in cache, "b" in cache, "c" in cache) == (False, True, True)
    assert len(cache) == 2 and cache.total_bytes == 80
    assert not cache.put("huge", snap(101))
    assert "huge" not in cache and cache.total_bytes == 80
    assert cache.take("b") is not None and cache.total_bytes == 40
    cache.put("c", snap(10))  # replacing counts the new size only
    assert cache.total_bytes == 10


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [
        ((), (1,), 0),
        ((1, 2, 3), (1, 2, 3), 3),
        ((1, 2, 3), (1, 2), 2),
        ((1, 2), (2, 2), 0),
        ((5, 6, 7, 8), (5, 6, 9, 8), 2),
    ],
)
def test_common_prefix(a: tuple[int, ...], b: tuple[int, ...], n: int) -> None:
    assert common_prefix(a, b) == n


@pytest.mark.parametrize(
    ("nbytes", "saved", "wins"),
    [
        (18_000_000, 1500, True),  # 9 ms of copying against 7.5 s of prompt evaluation
        (18_000_000, 1, False),  # copying 18 MB to save one token does not pay
        (1_000, 0, False),
    ],
)
def test_restore_only_when_it_wins(nbytes: int, saved: int, wins: bool) -> None:
    assert restore_wins(nbytes, saved, Rate(2e9), Rate(200.0)) is wins


async def test_consecutive_prompts_share_their_prefix_until_a_trim(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(
        tmp_path,
        tiny_model,
        n_ctx=1024,
        engine_cls=RecordingBackend,
        kv_cache_mb=16,
        bot=only_persona(tmp_path, "short", max_tokens=48),
    ) as (daemon, adapter):
        starts = []
        for i in range(40):
            await ask(daemon, adapter, f"message {i}: the water is cold", admin=True)
            history = await daemon.store.history("test:c1")
            starts.append(history[0].row)
        backend = daemon.backend
        assert isinstance(backend, RecordingBackend)
        # The answers: summaries of what leaves the window may be started in between (and
        # stopped by the next message); tests/test_summaries.py checks the prefix with one.
        answers = [g for g in backend.generations if g.request.cache_key == "test:c1"]
        prompts = [list(g.request.prompt or ()) for g in answers]
        trims = [i for i in range(1, len(starts)) if starts[i] != starts[i - 1]]
        assert trims, "the conversation should outgrow the context"
        for i in range(1, len(prompts)):
            if i in trims:
                continue
            previous, current = prompts[i - 1], prompts[i]
            assert current[: len(previous)] == previous, f"turn {i} changed the prefix"
            # And the backend reused it: only the new turn was evaluated.
            assert answers[i].result.reused_tokens >= len(previous) - 1
        # Each trim leaves room for several more turns before the next one.
        gaps = [b - a for a, b in itertools.pairwise(trims)]
        assert all(gap >= 3 for gap in gaps), gaps


async def test_a_new_channel_keeps_the_prefix_it_shares_with_the_channel_it_evicts(
    tiny_model: Path,
) -> None:
    # One window (slots, parallel 1): channel b takes channel a's sequence. The system prompt
    # they share stays in it (as llama-server keeps a slot's prefix); a is saved whole first.
    backend = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, kv_cache_mb=64, parallel=1, kv_layout="slots"
    )
    try:
        system = {"role": "system", "content": "You are a kind keeper of the lighthouse. " * 4}
        a = [system, {"role": "user", "content": "question about the sea " * 10}]
        b = [system, {"role": "user", "content": "a different question entirely " * 10}]
        await run(backend, a, "a")
        second = await run(backend, b, "b")
        shared = common_prefix(backend.prompt_tokens(a), backend.prompt_tokens(b))
        assert shared > 20
        assert second.result.reused_tokens == shared
        assert "a" in backend._cache  # evicted whole, as before
        follow_up = [*a, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "so?"}]
        again = await run(backend, follow_up, "a")
        assert again.result.reused_tokens >= len(backend.prompt_tokens(a)) - 1
    finally:
        await backend.close()


async def test_a_step_that_broke_after_writing_a_first_prompt_leaves_the_channel_usable(
    backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llama_decode wrote the prompt's cells, then the step broke before the sequence counted
    # them: they must go with the failed reply, or every later turn of the channel collides
    # with them ("inconsistent sequence positions").
    assert backend._engine is not None
    footprint = backend._engine.footprint
    step = footprint.step
    broke = []

    def breaks_once(*args: object) -> None:
        if not broke:
            broke.append(1)
            raise RuntimeError("the energy counter broke")
        step(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(footprint, "step", breaks_once)
    first = await run(backend, conversation("a", 1), "a")
    assert first.result.finish == "error" and broke
    second = await run(backend, conversation("a", 1), "a")
    assert second.result.finish == "length", second.result.error
