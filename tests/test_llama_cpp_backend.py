"""The in-process backend (the model thread) against real llama.cpp and the generated tiny GGUF."""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.model.gguf import GgufSummary, ModelFileError, check_fits, inspect_model
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling

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


class AbortingBackend(LlamaCppBackend):
    """Cancels a generation from inside llama.cpp's abort callback, i.e. while the prompt is
    being evaluated: the real abort path of llama_decode."""

    checks = 0

    def _should_abort(self, _data: ctypes.c_void_p) -> bool:
        flag = self._abort_flag
        if flag is None:
            return False
        type(self).checks += 1
        flag.set()
        return True


async def test_cancel_interrupts_prompt_evaluation(tiny_model: Path) -> None:
    backend = await AbortingBackend.load(tiny_model, n_ctx=4096, n_threads=2, n_batch=2048)
    try:
        long_prompt = [{"role": "user", "content": "hello world " * 900}]
        req = GenerationRequest(
            messages=long_prompt, sampling=Sampling(max_tokens=16), seed=1, cold=True
        )
        generation = backend.start(req)
        deltas = [d async for d in generation]
        assert AbortingBackend.checks >= 1
        assert generation.result.finish == "cancelled"
        assert generation.result.generated_tokens == 0 and deltas == []
        # After an aborted decode the model still answers (the cache was cleaned up).
        backend._should_abort = lambda _data: False  # type: ignore[method-assign]
        backend._abort_cb = type(backend._abort_cb)(backend._should_abort)
        _, text, _ = await collect(backend, request(seed=3, max_tokens=8, ban_eos=True))
        assert text
    finally:
        await backend.close()


async def test_prompt_evaluation_watches_the_abort_flag(tiny_model: Path) -> None:
    """The abort callback is installed during prompt evaluation and removed afterwards."""
    calls = {"during": 0}
    backend = await LlamaCppBackend.load(tiny_model, n_ctx=4096, n_threads=2, n_batch=2048)
    original = backend._should_abort

    def counting(data: ctypes.c_void_p) -> bool:
        calls["during"] += 1
        return original(data)

    backend._abort_cb = type(backend._abort_cb)(counting)
    try:
        long_prompt = [{"role": "user", "content": "hello world " * 500}]
        req = GenerationRequest(messages=long_prompt, sampling=Sampling(max_tokens=32), seed=1)
        generation = backend.start(req)
        _ = [d async for d in generation]
        assert calls["during"] > 0
        during = calls["during"]
        # Generation after the first token runs without the Python callback.
        generation = backend.start(
            GenerationRequest(messages=long_prompt, sampling=Sampling(max_tokens=32), seed=1)
        )
        _ = [d async for d in generation]
        assert calls["during"] - during < 200
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


class TimedBackend(LlamaCppBackend):
    """Records on which thread each generation starts and ends. Each one lingers at its start,
    so two generations running at the same time would overlap for sure."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def _generate(self, gen: Generation) -> None:
        self.events.append(("start", threading.current_thread().name))
        time.sleep(0.05)
        try:
            super()._generate(gen)
        finally:
            self.events.append(("end", threading.current_thread().name))


async def test_generations_from_two_tasks_are_serialized(tiny_model: Path) -> None:
    backend = await TimedBackend.load(tiny_model, n_ctx=2048, n_threads=2)
    try:

        async def run(seed: int) -> str:
            return (await collect(backend, request(seed=seed, max_tokens=16, cold=True)))[1]

        together = await asyncio.gather(run(11), run(12))
        await backend.ping()  # the worker is done with both
        events = list(backend.events)
        alone = [await run(11), await run(12)]
    finally:
        await backend.close()
    # One after the other on the model thread, never at the same time.
    assert [kind for kind, _ in events] == ["start", "end", "start", "end"]
    assert {thread for _, thread in events} == {"hearthbot-model"}
    assert together == alone  # neither disturbed the other


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
