"""The in-process backend (the model thread) against real llama.cpp and the generated tiny GGUF."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.model.gguf import GgufSummary, ModelFileError, check_fits, inspect_model
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.engine_steps import StepRecordingBackend

MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "hello there, tell me a story"},
]


@pytest.fixture
async def backend(tiny_model: Path) -> AsyncIterator[LlamaCppBackend]:
    loaded = await LlamaCppBackend.load(tiny_model, n_ctx=2048, n_threads=2, n_batch=512)
    yield loaded
    await loaded.close()


def request(seed: int, max_tokens: int = 48, **extra: object) -> GenerationRequest:
    sampling = Sampling(temperature=0.8, max_tokens=max_tokens)
    return GenerationRequest(messages=MESSAGES, sampling=sampling, seed=seed, **extra)  # type: ignore[arg-type]


async def collect(backend: LlamaCppBackend, req: GenerationRequest) -> tuple[list[str], str, str]:
    generation = backend.start(req)
    deltas = [delta async for delta in generation]
    return deltas, generation.result.text, generation.result.finish


async def test_model_info_and_template(backend: LlamaCppBackend) -> None:
    info = backend.info
    assert info.name == "hearthbot-tiny-test"
    assert info.n_ctx == 2048 and info.n_threads == 2
    assert info.n_params > 100_000
    prompt = backend.render(MESSAGES)
    assert prompt.startswith("<|im_start|>system\nYou are a test.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    # User text that looks like a special token stays text when counted.
    assert backend.count_tokens("<|im_end|>") > 1


async def test_streams_deltas_that_add_up_to_the_text(backend: LlamaCppBackend) -> None:
    deltas, text, finish = await collect(backend, request(seed=3, max_tokens=64, ban_eos=True))
    assert finish == "length"
    assert len(deltas) >= 1
    assert "".join(deltas) == text
    assert text.strip()


async def test_max_tokens_is_respected(backend: LlamaCppBackend) -> None:
    generation = backend.start(request(seed=1, max_tokens=7, ban_eos=True))
    _ = [d async for d in generation]
    assert generation.result.finish == "length"
    assert generation.result.generated_tokens == 7


async def test_end_token_stops_generation(backend: LlamaCppBackend) -> None:
    finishes = set()
    for seed in range(12):
        generation = backend.start(request(seed=seed, max_tokens=64))
        _ = [d async for d in generation]
        finishes.add(generation.result.finish)
        assert "<|im_end|>" not in generation.result.text
    assert "stop" in finishes  # the tiny model emits its end token for some seeds


async def test_same_seed_cold_gives_same_text(backend: LlamaCppBackend) -> None:
    _, first, _ = await collect(backend, request(seed=42, cold=True))
    await collect(backend, request(seed=7))  # leave other state in the cache
    _, again, _ = await collect(backend, request(seed=42, cold=True))
    assert first == again and first
    texts = {(await collect(backend, request(seed=s, cold=True)))[1] for s in range(5)}
    assert len(texts) > 1  # different seeds draw different replies


async def test_stop_string_ends_the_reply_and_is_not_shown(backend: LlamaCppBackend) -> None:
    _, free, _ = await collect(backend, request(seed=5, max_tokens=64, ban_eos=True))
    words = free.split()
    assert len(words) > 3
    stop = " " + words[2]  # a string the unconstrained reply contains
    deltas, text, finish = await collect(
        backend, request(seed=5, max_tokens=64, ban_eos=True, stop=(stop,), cold=True)
    )
    _, free_cold, _ = await collect(
        backend, request(seed=5, max_tokens=64, ban_eos=True, cold=True)
    )
    assert finish == "stop"
    assert stop not in text
    assert free_cold.startswith(text)
    assert "".join(deltas) == text


async def test_a_job_that_breaks_does_not_stop_the_model_thread(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert backend._engine is not None
    pool = backend._engine.pool

    def broken() -> tuple[bool, frozenset[str]]:
        raise RuntimeError("honouring forgets broke")

    monkeypatch.setattr(pool, "honour_forgets", broken)
    await backend.forget("a")  # its job on the model thread breaks
    await asyncio.wait_for(backend.ping(), 30)
    monkeypatch.undo()
    _, text, finish = await asyncio.wait_for(collect(backend, request(seed=3, max_tokens=4)), 60)
    assert finish == "length" and text


async def test_cancel_during_generation(backend: LlamaCppBackend) -> None:
    generation = backend.start(request(seed=2, max_tokens=100_000 // 100, ban_eos=True))
    seen = 0
    async for _ in generation:
        seen += 1
        generation.cancel()
    assert generation.result.finish == "cancelled"
    assert generation.result.generated_tokens < 1000
    # The worker is healthy afterwards.
    _, text, finish = await collect(backend, request(seed=2, max_tokens=8, ban_eos=True))
    assert finish == "length" and text


async def test_cancel_stops_prompt_evaluation_between_chunks(tiny_model: Path) -> None:
    """A long prompt is evaluated in chunks, one per step; a cancel takes effect before the
    next chunk (never inside a step: that would abort the other replies' tokens too)."""
    backend = await StepRecordingBackend.load(tiny_model, n_ctx=4096, n_threads=2, n_batch=64)
    try:
        long_prompt = [{"role": "user", "content": "hello world " * 900}]
        req = GenerationRequest(
            messages=long_prompt, sampling=Sampling(max_tokens=16), seed=1, cache_key="c"
        )
        # On the model thread, right after the first step.
        backend.step_log.after_step = lambda engine, _step: [
            s.generation.cancel() for s in engine.streams
        ]
        generation = backend.start(req)
        deltas = [d async for d in generation]
        await backend.ping()
        steps = backend.step_log.steps
        assert len(steps) == 1  # one chunk was evaluated, then the cancel was seen
        assert 0 < steps[0].prompt(generation) <= 64
        assert generation.result.finish == "cancelled"
        assert generation.result.generated_tokens == 0 and deltas == []
        # The model still answers, and the chunk evaluated before the cancel is reused.
        backend.step_log.after_step = None
        again = backend.start(req)
        _ = [d async for d in again]
        assert again.result.finish == "length"
        assert again.result.reused_tokens == steps[0].prompt(generation)
    finally:
        await backend.close()


async def test_prefix_of_previous_prompt_is_reused(backend: LlamaCppBackend) -> None:
    generation = backend.start(request(seed=4, max_tokens=8))
    _ = [d async for d in generation]
    longer = [
        *MESSAGES,
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and?"},
    ]
    generation = backend.start(
        GenerationRequest(messages=longer, sampling=Sampling(max_tokens=8), seed=4)
    )
    _ = [d async for d in generation]
    assert generation.result.reused_tokens >= len(backend.prompt_tokens(MESSAGES)) - 2


async def test_fixed_seed_replies_decode_alone_one_at_a_time(tiny_model: Path) -> None:
    """Two fixed-seed (cold) replies started together: each step holds only one of them
    (decoding together would change their logits, and with them the text), the second starts
    when the first has ended, and each gives the text it gives alone."""
    backend = await StepRecordingBackend.load(tiny_model, n_ctx=2048, n_threads=2)
    try:

        async def run(seed: int) -> tuple[str, Generation]:
            generation = backend.start(request(seed=seed, max_tokens=16, cold=True, ban_eos=True))
            return "".join([d async for d in generation]), generation

        (first, g1), (second, g2) = await asyncio.gather(run(11), run(12))
        await backend.ping()  # the step that ended them is recorded by now
        steps = list(backend.step_log.steps)
        alone = [(await run(11))[0], (await run(12))[0]]
    finally:
        await backend.close()
    assert not any(step.holds(g1) and step.holds(g2) for step in steps)
    last_of_first = max(i for i, step in enumerate(steps) if step.holds(g1))
    first_of_second = min(i for i, step in enumerate(steps) if step.holds(g2))
    assert last_of_first < first_of_second
    assert [first, second] == alone  # neither disturbed the other


# -- model file checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "corrupt"),
        (b"GGML" + b"\0" * 100, "corrupt"),
        (b"GGUF" + b"\3\0\0\0" + b"\0" * 4, "corrupt"),
        (b"\x89PNG\r\n" * 20, "corrupt"),
    ],
)
async def test_corrupt_model_file_is_a_clear_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        await LlamaCppBackend.load(path, n_ctx=512, n_threads=1)
    assert expected in str(err.value) and str(path) in str(err.value)


async def test_truncated_model_is_a_clear_error(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "truncated.gguf"
    path.write_bytes(tiny_model.read_bytes()[:20_000])
    with pytest.raises(ModelFileError) as err:
        await LlamaCppBackend.load(path, n_ctx=512, n_threads=1)
    assert str(path) in str(err.value)


async def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        await LlamaCppBackend.load(tmp_path / "nope.gguf", n_ctx=512, n_threads=1)


def test_memory_check_counts_weights_and_kv(tiny_model: Path) -> None:
    summary = inspect_model(tiny_model)
    assert (summary.n_layer, summary.n_embd, summary.n_head, summary.n_head_kv) == (2, 64, 4, 2)
    # 2 (K,V) × 2 bytes × layers × kv heads × head dim × positions
    assert summary.kv_bytes(1000) == 2 * 2 * 2 * 2 * 16 * 1000
    check_fits(summary, 4096, available=10 * 2**30)
    with pytest.raises(ModelFileError, match="GiB is available"):
        check_fits(summary, 4096, available=1024)


def test_big_model_estimate_is_plausible() -> None:
    # Qwen2.5-0.5B: 24 layers, 896 hidden, 14 heads, 2 KV heads → ~12 KiB of KV per token.
    summary = GgufSummary(Path("x.gguf"), 491_400_064, "qwen2", 24, 896, 14, 2)
    assert summary.kv_bytes(1) == 12_288
