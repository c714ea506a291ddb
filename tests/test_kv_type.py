"""[model] kv_type, flash_attn and the GPU offload settings: validated together, and each
reaching llama.cpp, shown by what llama.cpp did (KV state bytes, its log), not by the config
read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import llama_cpp
import pytest

from bench.kv_type import CELL_HEADER_BYTES, kv_bytes_per_token
from bot.model.backend import load_backend
from bot.model.gguf import inspect_model
from bot.model.llama_cpp.backend import LlamaCppBackend, runs_on
from bot.model.llama_cpp.placement import Attention, Offload, Placement, read_placement
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from bot.settings import ConfigError, ModelSettings, load_settings
from support.tinymodel import N_EMBD, N_LAYER, WIDE_HEADS

# K (or V) values per token and layer of the wide-heads model: its KV heads × head width.
WIDE_KV_VALUES = WIDE_HEADS[1] * N_EMBD // WIDE_HEADS[0]

# A q8_0 block: 32 values in 34 bytes; q4_0: in 18; f16: 64.
RATIO = {"q8_0": 34 / 64, "q4_0": 18 / 64}


# -- settings ----------------------------------------------------------------------------------


def test_a_quantized_v_cache_without_flash_attention_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(model={"kv_type": "q8_0", "flash_attn": "off"})
    text = str(caught.value)
    assert "model.kv_type" in text and 'flash_attn = "off"' in text
    assert 'flash_attn = "auto" or "on"' in text
    assert "Failed to create llama_context" not in text


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"kv_type": "q5_1"}, "model.kv_type"),
        ({"flash_attn": "yes"}, "model.flash_attn"),
        ({"n_gpu_layers": -2}, "model.n_gpu_layers"),
        ({"main_gpu": -1}, "model.main_gpu"),
        ({"tensor_split": [1, -1]}, "must not be negative"),
        ({"tensor_split": [0, 0]}, "at least one GPU"),
    ],
)
def test_bad_offload_settings_are_named(model: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(model=model)


@pytest.mark.parametrize(
    ("model", "kv_type", "flash_attn"),
    [
        ({}, "f16", "auto"),
        ({"kv_type": "q8_0"}, "q8_0", "auto"),
        ({"kv_type": "q4_0", "flash_attn": "on"}, "q4_0", "on"),
        ({"flash_attn": "off"}, "f16", "off"),
    ],
)
def test_good_combinations(model: dict[str, object], kv_type: str, flash_attn: str) -> None:
    settings = load_settings(model=model).model
    assert (settings.kv_type, settings.flash_attn) == (kv_type, flash_attn)
    assert settings.n_gpu_layers is None and settings.tensor_split == []


def test_the_default_offload_is_all_layers_only_with_a_gpu_backend() -> None:
    assert Offload().layers() == (-1 if llama_cpp.llama_supports_gpu_offload() else 0)
    assert Offload(n_gpu_layers=7).layers() == 7


@pytest.mark.parametrize(
    ("attention", "offloaded", "expected"),
    [
        (Attention("f16", "auto"), False, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED),
        (Attention("f16", "auto"), True, llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO),
        (Attention("q8_0", "auto"), False, llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO),
        (Attention("f16", "on"), False, llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED),
        (Attention("f16", "off"), True, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED),
    ],
)
def test_what_auto_means(attention: Attention, offloaded: bool, expected: int) -> None:
    assert attention.flash_attn_type(offloaded) == expected


# -- llama.cpp's log, read --------------------------------------------------------------------

GPU_LOG = [
    "load_tensors: layer   0 assigned to device CUDA0, is_swa = 0\n",
    "load_tensors: layer   1 assigned to device CUDA0, is_swa = 0\n",
    "load_tensors: layer   2 assigned to device CUDA1, is_swa = 0\n",
    "load_tensors: layer   3 assigned to device CPU, is_swa = 0\n",
    "llama_context: flash_attn            = enabled\n",
    "llama_kv_cache: size =    3.19 MiB (   512 cells,  24 layers,  2/1 seqs), "
    "K (q8_0):    1.59 MiB, V (q4_0):    1.59 MiB\n",
]


def test_the_log_says_where_layers_went() -> None:
    placed = read_placement(GPU_LOG)
    assert placed.layers == (("CUDA0", 2), ("CUDA1", 1), ("CPU", 1))
    assert (placed.offloaded, placed.n_layers, placed.gpus) == (3, 4, ["CUDA0", "CUDA1"])
    assert (placed.flash_attn, placed.k_type, placed.v_type) == (True, "q8_0", "q4_0")
    assert runs_on(placed, 4) == "CUDA0 + CUDA1 (3 of 4 layers), the rest on CPU, 4 threads"
    assert runs_on(Placement((("Vulkan0", 4),)), 1) == "Vulkan0 (4 of 4 layers)"
    assert runs_on(Placement((("CPU", 4),)), 1) == "CPU, 1 thread"


# -- reaching llama.cpp -----------------------------------------------------------------------


async def load(model: Path, kv_type: str = "f16", flash_attn: str = "auto") -> LlamaCppBackend:
    return await LlamaCppBackend.load(
        model,
        n_ctx=1024,
        n_threads=2,
        kv_cache_mb=64,
        parallel=1,
        resident=0,  # every other channel's turn evicts the last one to a snapshot
        attention=Attention(kv_type, flash_attn),
    )


@pytest.fixture(params=["f16", "q8_0", "q4_0"])
async def backend(
    request: pytest.FixtureRequest, tiny_model_heads32: Path
) -> AsyncIterator[LlamaCppBackend]:
    loaded = await load(tiny_model_heads32, request.param)
    yield loaded
    await loaded.close()


def messages(channel: str, turns: int) -> list[dict[str, str]]:
    out = [{"role": "system", "content": f"You talk in channel {channel}."}]
    for i in range(turns):
        out.append({"role": "user", "content": f"question {i} about water and fire " * 6})
        out.append({"role": "assistant", "content": f"answer {i} we can help you " * 6})
    out.append({"role": "user", "content": "and now?"})
    return out


async def ask(backend: LlamaCppBackend, chat: list[dict[str, str]], key: str) -> Generation:
    request = GenerationRequest(
        messages=chat, sampling=Sampling(max_tokens=6), seed=1, cache_key=key
    )
    generation = backend.start(request)
    _ = [piece async for piece in generation]
    return generation


def test_kv_bytes_per_token_by_type(tiny_model_heads32: Path) -> None:
    """What llama.cpp stores per token, by the state it copies out (bench.kv_type)."""
    f16 = kv_bytes_per_token(tiny_model_heads32, "f16")
    assert f16 == 2 * N_LAYER * WIDE_KV_VALUES * 2  # K and V, every layer, 2 bytes a value
    for kv_type, ratio in RATIO.items():
        assert kv_bytes_per_token(tiny_model_heads32, kv_type) / f16 == pytest.approx(ratio)


async def snapshot_bytes_per_token(backend: LlamaCppBackend) -> float:
    await ask(backend, messages("a", 6), "a")
    await ask(backend, messages("b", 2), "b")  # evicts a: its KV is copied out
    snapshot = backend._cache.peek("a")
    assert snapshot is not None
    return snapshot.nbytes / len(snapshot.tokens)


async def test_the_kv_type_reaches_llama_cpp(backend: LlamaCppBackend) -> None:
    kv_type = backend.info.kv_type
    assert backend._loaded is not None
    placed = backend._loaded.placement
    assert (placed.k_type, placed.v_type) == (kv_type, kv_type)  # as llama.cpp logged it
    # A quantized V cache runs only with flash attention: "auto" turned it on; f16 on the
    # CPU alone keeps it off.
    assert placed.flash_attn is (kv_type != "f16")
    assert backend.info.runs_on == "CPU, 2 threads"
    assert placed.n_layers >= N_LAYER and placed.offloaded == 0


async def test_quantized_snapshots_are_smaller_by_the_block_ratio(tiny_model_heads32: Path) -> None:
    per_token = {}
    for kv_type in ("f16", "q8_0", "q4_0"):
        backend = await load(tiny_model_heads32, kv_type)
        try:
            per_token[kv_type] = await snapshot_bytes_per_token(backend)
        finally:
            await backend.close()
    # A snapshot also holds each cell's header (bench.kv_type.CELL_HEADER_BYTES).
    values = 2 * N_LAYER * WIDE_KV_VALUES

    def expected(kv_type: str) -> float:
        size = CELL_HEADER_BYTES + values * 2 * RATIO.get(kv_type, 1.0)
        return size / (CELL_HEADER_BYTES + values * 2)

    for kv_type in RATIO:
        assert per_token[kv_type] / per_token["f16"] == pytest.approx(expected(kv_type), abs=0.01)


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
async def test_quantized_kv_batches_and_stays_warm(tiny_model_heads32: Path, kv_type: str) -> None:
    backend = await LlamaCppBackend.load(
        tiny_model_heads32,
        n_ctx=1024,
        n_threads=2,
        kv_cache_mb=64,
        parallel=3,
        resident=0,
        attention=Attention(kv_type, "auto"),
    )
    try:
        chats = {key: messages(key, 4) for key in ("a", "b", "c")}
        first = await asyncio.gather(*(ask(backend, chat, key) for key, chat in chats.items()))
        assert all(g.result.error is None and g.result.generated_tokens > 0 for g in first)
        assert backend.stats().steps < sum(g.result.generated_tokens for g in first)  # batched
        await ask(backend, messages("d", 4), "d")
        for key, chat in chats.items():
            follow_up = [
                *chat,
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "more"},
            ]
            again = await ask(backend, follow_up, key)
            assert again.result.reused_tokens >= len(backend.prompt_tokens(chat)) - 1
    finally:
        await backend.close()


async def test_a_quantized_v_cache_without_flash_attention_fails_in_llama_cpp(
    tiny_model_heads32: Path,
) -> None:
    """Why settings refuse the combination: llama.cpp's own error says nothing of it."""
    with pytest.raises(Exception, match="Failed to create llama_context"):
        await load(tiny_model_heads32, "q8_0", "off")


async def test_settings_reach_the_backend(tiny_model_heads32: Path) -> None:
    model = ModelSettings(path=tiny_model_heads32, n_ctx=512, parallel=1, kv_type="q4_0")
    backend = await load_backend(model, tiny_model_heads32)
    try:
        assert isinstance(backend, LlamaCppBackend) and backend._loaded is not None
        assert backend._loaded.placement.v_type == "q4_0"
    finally:
        await backend.close()


async def test_offload_and_flash_attention_settings_reach_llama_cpp(
    tiny_model_heads32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here: llama.cpp takes the layer settings and places nothing, so what it was handed
    # is read where it is handed over (Offload.apply writes llama_model_params).
    handed: list[Offload] = []
    apply = Offload.apply

    def recording(self: Offload, params: llama_cpp.llama_model_params) -> object:
        handed.append(self)
        return apply(self, params)

    monkeypatch.setattr(Offload, "apply", recording)
    model = ModelSettings(
        path=tiny_model_heads32,
        n_ctx=512,
        parallel=1,
        n_gpu_layers=3,
        main_gpu=0,
        tensor_split=[2.0, 1.0],
        flash_attn="on",
    )
    backend = await load_backend(model, tiny_model_heads32)
    try:
        assert isinstance(backend, LlamaCppBackend) and backend._loaded is not None
        assert backend._loaded.placement.flash_attn is True  # as llama.cpp logged it
    finally:
        await backend.close()
    assert [(o.n_gpu_layers, o.main_gpu, o.tensor_split) for o in handed] == [(3, 0, (2.0, 1.0))]


def test_the_memory_estimate_follows_the_kv_type(tiny_model_heads32: Path) -> None:
    summary = inspect_model(tiny_model_heads32)
    f16 = summary.kv_bytes(4096)
    assert summary.kv_bytes(4096, kv_type="q8_0") == pytest.approx(f16 * RATIO["q8_0"], rel=1e-6)
    assert summary.kv_bytes(4096, kv_type="q4_0") == pytest.approx(f16 * RATIO["q4_0"], rel=1e-6)


def test_tensor_split_is_handed_over_as_llama_cpp_reads_it() -> None:
    """llama.cpp reads llama_max_devices() floats through the pointer (no getter shows it)."""
    params = llama_cpp.llama_model_default_params()
    keep = Offload(n_gpu_layers=5, main_gpu=1, tensor_split=(3.0, 1.0)).apply(params)
    n = llama_cpp.llama_max_devices()
    assert keep is not None and (params.n_gpu_layers, params.main_gpu) == (5, 1)
    assert [params.tensor_split[i] for i in range(n)] == [3.0, 1.0] + [0.0] * (n - 2)
    with pytest.raises(ValueError, match=f"tensor_split names {n + 1} devices, at most {n}"):
        Offload(tensor_split=(1.0,) * (n + 1)).apply(params)
