"""`hearthbot check`'s memory lines for the configured model: the estimate the backend
enforces at load (the whole KV pool), and what its size and quantization mean next to the
catalog's next size down and up."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.app.check.model
from bot.app.check.model import memory_check, size_check
from bot.model.catalog import load_catalog
from bot.model.gguf import GgufSummary
from bot.settings import ModelSettings

GIB = 2**30
# Qwen2.5-1.5B-Instruct Q4_K_M's header facts (28 blocks, 1536 wide, 12 heads, 2 KV heads).
QWEN_1_5B = GgufSummary(
    Path("Qwen2.5-1.5B-Instruct-Q4_K_M.gguf"), 986048768, "qwen2", 28, 1536, 12, 2
)


def test_the_memory_check_counts_the_whole_kv_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend refuses to load when weights + n_ctx × parallel KV cells + saved channels
    do not fit (LlamaCppBackend.load → check_fits); check must weigh the same, not one window."""
    monkeypatch.setattr(bot.app.check.model, "available_memory", lambda: 64 * GIB)
    model = ModelSettings.model_validate({"n_ctx": 32768, "parallel": 4, "kv_cache_mb": 0})
    pool = 32768 * 4
    check = memory_check(QWEN_1_5B, model)
    expected = QWEN_1_5B.needed_bytes(pool)
    assert f"needs about {expected / GIB:.1f} GiB" in check.detail
    assert f"KV cache for {pool:,} tokens" in check.detail
    # 3.5 GiB of KV for 131,072 tokens: over a 3 GiB limit, as the load would be.
    monkeypatch.setattr(bot.app.check.model, "available_memory", lambda: 3 * GIB)
    assert not memory_check(QWEN_1_5B, model).ok


def test_size_says_what_params_and_quantization_mean_and_the_next_sizes() -> None:
    model = ModelSettings.model_validate({"n_ctx": 4096, "parallel": 4})
    check = size_check(QWEN_1_5B, 1.54e9, "Q4_K_M", model, load_catalog(), available=4 * GIB)
    assert check.ok
    detail = check.detail
    assert detail.startswith("1.5B parameters at Q4_K_M: 5.1 bits per weight, 0.9 GiB of weights")
    assert "KV cache 28 KiB per token (f16), 0.4 GiB for the pool of 16,384 tokens" in detail
    assert (
        "next size down: llama-3.2-1b:q4_k_m needs about 1.8 GiB (fits the 4.0 GiB available)"
        in detail
    )
    assert (
        "next size up: qwen2.5-3b:q4_k_m needs about 2.9 GiB (fits the 4.0 GiB available)" in detail
    )
    small = size_check(QWEN_1_5B, 1.54e9, "Q4_K_M", model, load_catalog(), available=2 * GIB)
    assert "qwen2.5-3b:q4_k_m needs about 2.9 GiB (does not fit" in small.detail
    other = GgufSummary(Path("own-14b.gguf"), 8 * GIB, "qwen2", 48, 5120, 40, 8)
    largest = size_check(other, 14.7e9, "Q4_K_M", model, load_catalog(), available=None)
    assert "next size up: none in the catalog" in largest.detail
