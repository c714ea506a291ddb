"""The KV estimate from a GGUF header takes the head size the header states
(`<arch>.attention.key_length` / `value_length`) when there is one: Qwen3, Gemma 2 and 3 have
heads wider than embedding / heads, and llama.cpp caches them at that width."""

from __future__ import annotations

from pathlib import Path

import gguf

from bot.model.gguf import inspect_model


def header(path: Path, arch: str, **lengths: int) -> Path:
    """A GGUF with only the attention facts in its header (no tensors: inspect reads no more)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(36)
    w.add_embedding_length(2560)
    w.add_head_count(32)
    w.add_head_count_kv(8)
    if "key" in lengths:
        w.add_key_length(lengths["key"])
    if "value" in lengths:
        w.add_value_length(lengths["value"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


def test_stated_head_size_counts(tmp_path: Path) -> None:
    """Qwen3-4B: 2560 wide, 32 heads, but 128 per head (its config's head_dim), not 80."""
    summary = inspect_model(header(tmp_path / "qwen3.gguf", "qwen3", key=128, value=128))
    assert summary.kv_bytes(1) == 2 * 36 * 8 * 128 * 2  # 144 KiB per token in f16


def test_keys_and_values_of_different_sizes(tmp_path: Path) -> None:
    summary = inspect_model(header(tmp_path / "kv.gguf", "qwen3", key=192, value=128))
    assert summary.kv_bytes(1) == 36 * 8 * (192 + 128) * 2


def test_without_a_stated_size_it_is_embedding_over_heads(tmp_path: Path) -> None:
    summary = inspect_model(header(tmp_path / "llama.gguf", "llama"))
    assert summary.kv_bytes(1) == 2 * 36 * 8 * 80 * 2
