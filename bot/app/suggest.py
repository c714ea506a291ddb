"""`hearthbot model suggest`: read the box and the configured KV pool, measure the configured
model's speed briefly, and print which catalog models fit (the rows: bot.model.suggest)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bot.app.bootstrap import find_model
from bot.model.backend import Backend, load_backend
from bot.model.catalog import load_catalog
from bot.model.gguf import ModelFileError
from bot.model.memory import available_memory
from bot.model.suggest import (
    Gpu,
    Machine,
    Speed,
    machine_text,
    rough_speed,
    rows,
    speed_text,
    table,
)
from bot.model.types import GenerationRequest
from bot.personas import Sampling
from bot.settings import Settings

# Enough tokens for a steady rate, few enough to take seconds even on a slow CPU.
MEASURE_TOKENS = 16


async def suggest(settings: Settings, measure: bool = True) -> int:
    model = settings.model
    entries = load_catalog()
    machine = Machine(available_memory(), tuple(gpus()), os.cpu_count() or 1)
    path = find_model(settings)
    speed = None
    if measure and path is not None and model.backend == "llama_cpp":
        try:
            speed = await measured(settings, path)
        except ModelFileError as exc:
            print(f"(not measured: {exc})", file=sys.stderr)
    found = rows(
        entries,
        machine,
        pool_tokens=model.pool_tokens(),
        kv_type=model.kv_type,
        saved_bytes=model.kv_cache_mb * 2**20,
        speed=speed,
    )
    print(f"box: {machine_text(machine)}")
    layout = (
        f"a window of n_ctx {model.n_ctx:,} for each of parallel {model.parallel} slots"
        if model.kv_layout == "slots"
        else f"a pool of kv_pool_tokens, or n_ctx {model.n_ctx:,} × parallel {model.parallel}"
    )
    print(
        f"KV cache: {model.pool_tokens():,} tokens of {model.kv_type} ({layout}), plus "
        f"kv_cache_mb {model.kv_cache_mb} for channels kept warm"
    )
    print("\n".join(table(found, current_file=path.name if path else None)))
    print(speed_text(speed or rough_speed()))
    print("needs: weights + KV cache + kept channels + working memory (on a GPU: weights + KV)")
    print("pull one: hearthbot model pull <model>, e.g. hearthbot model pull qwen2.5-3b")
    return 0


def gpus() -> list[Gpu]:
    """The GPUs llama.cpp sees here, with their free memory."""
    from bot.model.llama_cpp.devices import devices

    return [Gpu(d.name, d.free_bytes) for d in devices() if d.gpu]


async def measured(settings: Settings, path: Path) -> Speed:
    """Load the configured model as a start would, but with a small KV pool (one reply's
    speed is measured: the configured pool would only cost memory and loading time), and
    time a short generation."""
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    small = {"n_ctx": 512, "parallel": 1, "kv_pool_tokens": 0, "kv_cache_mb": 0}
    model = settings.model.model_copy(update=small)
    backend = await load_backend(model, path, settings.footprint)
    try:
        return await measure_speed(backend, size)
    finally:
        await backend.close()


async def measure_speed(backend: Backend, size_bytes: int, tokens: int = MEASURE_TOKENS) -> Speed:
    """Generation speed of a loaded model: `tokens` tokens after the first (the prompt's
    evaluation is not generation), end-of-generation banned so every run makes them all."""
    request = GenerationRequest(
        messages=[{"role": "user", "content": "Count from one to one hundred in words."}],
        sampling=Sampling.model_validate({"temperature": 0.0, "max_tokens": tokens + 1}),
        seed=0,
        ban_eos=True,
        cold=True,
    )
    generation = backend.start(request)
    async for _ in generation:
        pass
    result = generation.result
    if result.error:
        raise ModelFileError(f"the model failed while measuring its speed: {result.error}")
    after_first = result.total_s - (result.first_token_s or 0.0)
    rate = (result.generated_tokens - 1) / after_first if after_first > 0 else 0.0
    info = backend.info
    on_gpu = info.layers > 0 and info.offloaded_layers * 2 > info.layers
    return Speed(rate, size_bytes, on_gpu=on_gpu)
