"""The model catalog (bot/model/catalog.toml): every entry complete, short names resolve, the
next size up and down, and the memory a catalog entry needs matches a GGUF header's estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.model.catalog import (
    QUANTS,
    CatalogError,
    is_short_name,
    load_catalog,
    neighbours,
    params_value,
    resolve,
)
from bot.model.gguf import OVERHEAD_BYTES, GgufSummary

ENTRIES = load_catalog()


def test_the_shipped_catalog_is_complete_and_unique() -> None:
    assert len(ENTRIES) >= 10
    specs = [e.spec for e in ENTRIES]
    assert len(specs) == len(set(specs))
    files = [(e.repo, e.file) for e in ENTRIES]
    assert len(files) == len(set(files))
    for e in ENTRIES:
        assert e.quant in QUANTS, e.spec
        assert e.file.lower().endswith(".gguf") and e.repo.count("/") == 1, e.spec
        assert e.source, e.spec
        assert 0.4e9 <= params_value(e.params) <= 15e9, e.spec
        # A file's size follows from its parameters and bits per weight, so a typo shows
        # (wide bounds: a small model's large vocabulary is kept at higher precision).
        bits = e.size_bytes * 8 / params_value(e.params)
        low, high = {"Q4_K_M": (3.5, 8.5), "Q5_K_M": (5, 8.5)}.get(e.quant, (7.5, 11.5))
        assert low <= bits <= high, (e.spec, bits)
    # The default of each short name exists: `model pull <name>` always resolves.
    for name in {e.name for e in ENTRIES}:
        assert resolve(name, ENTRIES).quant == "Q4_K_M"


@pytest.mark.parametrize(
    ("spec", "file"),
    [
        ("qwen2.5-3b", "Qwen2.5-3B-Instruct-Q4_K_M.gguf"),
        ("Qwen2.5-3B", "Qwen2.5-3B-Instruct-Q4_K_M.gguf"),
        ("qwen2.5-7b:q5_k_m", "Qwen2.5-7B-Instruct-Q5_K_M.gguf"),
        ("qwen2.5-7b:Q4_K_M", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
        ("qwen2.5-7b:q8_0", "Qwen2.5-7B-Instruct-Q8_0.gguf"),
        ("phi-4", "phi-4-Q4_K_M.gguf"),
        ("llama-3.2-1b:q8_0", "llama-3.2-1b-instruct-q8_0.gguf"),
    ],
)
def test_short_names_resolve(spec: str, file: str) -> None:
    assert resolve(spec, ENTRIES).file == file


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("qwen9-1b", "unknown model 'qwen9-1b': the catalog knows "),
        ("qwen2.5-3b:q8_0", "the catalog has no Q8_0 of qwen2.5-3b: it lists q4_k_m"),
    ],
)
def test_unknown_short_names_say_what_there_is(spec: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace(".", r"\.")):
        resolve(spec, ENTRIES)


def test_short_names_and_repos_differ() -> None:
    assert is_short_name("qwen2.5-3b")
    assert not is_short_name("Qwen/Qwen2.5-3B-Instruct-GGUF")


@pytest.mark.parametrize(
    ("n_params", "quant", "down", "up"),
    [
        (494e6, "Q4_K_M", None, "llama-3.2-1b:q4_k_m"),
        (1.54e9, "Q4_K_M", "llama-3.2-1b:q4_k_m", "qwen2.5-3b:q4_k_m"),
        (7.6e9, "Q5_K_M", "qwen2.5-3b:q4_k_m", "gemma-2-9b:q4_k_m"),  # 8B: the same size
        (14.7e9, "Q4_K_M", "gemma-2-9b:q4_k_m", None),
        (1e9, "Q8_0", "qwen2.5-0.5b:q8_0", "qwen2.5-1.5b:q4_k_m"),
    ],
)
def test_next_size_down_and_up(
    n_params: float, quant: str, down: str | None, up: str | None
) -> None:
    below, above = neighbours(ENTRIES, n_params, quant)
    assert (below.spec if below else None, above.spec if above else None) == (down, up)


def test_a_catalog_entry_needs_what_its_gguf_header_would() -> None:
    """Qwen2.5-0.5B's facts as its GGUF header gives them (bench model's header: 24 blocks,
    embedding 896, 14 heads, 2 KV heads)."""
    entry = resolve("qwen2.5-0.5b", ENTRIES)
    header = GgufSummary(Path("x.gguf"), entry.size_bytes, "qwen2", 24, 896, 14, 2)
    for kv_type in ("f16", "q8_0", "q4_0"):
        assert entry.kv_bytes(16384, kv_type) == header.kv_bytes(16384, kv_type=kv_type)
        assert entry.needed_bytes(16384, kv_type, saved_bytes=2**28) == (
            header.needed_bytes(16384, kv_type=kv_type) + 2**28
        )
    # 12 KiB per token in f16: 2 (K, V) × 24 layers × 2 heads × 64 × 2 bytes.
    assert entry.kv_bytes(1) == 12288
    assert entry.needed_bytes(0) == entry.size_bytes + OVERHEAD_BYTES


def test_a_broken_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text('[[model]]\nname = "x"\n')
    with pytest.raises(CatalogError, match="entry 1 lacks"):
        load_catalog(path)
    path.write_text("[[model]\n")
    with pytest.raises(CatalogError, match="cannot read the model catalog"):
        load_catalog(path)
