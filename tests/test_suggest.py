"""`model suggest`'s rows from fixed machine facts: small RAM, big RAM, GPUs, unknown memory,
and the speed column scaled from a measurement (or the stated rough figure)."""

from __future__ import annotations

import pytest

from bot.model.catalog import load_catalog, resolve
from bot.model.suggest import (
    GIB,
    Gpu,
    Machine,
    Speed,
    machine_text,
    rough_speed,
    rows,
    speed_text,
    table,
)

ENTRIES = load_catalog()
POOL = 4096 * 4  # the defaults: n_ctx 4096 × parallel 4
SAVED = 256 * 2**20  # kv_cache_mb 256


def where(machine: Machine, pool_tokens: int = POOL, kv_type: str = "f16") -> dict[str, str]:
    found = rows(ENTRIES, machine, pool_tokens=pool_tokens, kv_type=kv_type, saved_bytes=SAVED)
    return {row.entry.spec: row.runs_on for row in found}


@pytest.mark.parametrize(
    ("machine", "fits", "does_not_fit"),
    [
        # A 2 GiB box: only the smallest files with their 16k-token pool.
        (Machine(2 * GIB), ["qwen2.5-0.5b:q4_k_m", "qwen2.5-0.5b:q8_0"], ["qwen2.5-3b:q4_k_m"]),
        # 5 GiB: up to 3B; 7B (4.4 GiB file, 0.9 GiB KV pool) does not.
        (Machine(5 * GIB), ["qwen2.5-3b:q4_k_m", "llama-3.2-3b:q4_k_m"], ["qwen2.5-7b:q4_k_m"]),
        # 64 GiB: everything.
        (Machine(64 * GIB), [e.spec for e in ENTRIES], []),
    ],
)
def test_ram_decides_on_a_box_without_gpu(
    machine: Machine, fits: list[str], does_not_fit: list[str]
) -> None:
    found = where(machine)
    assert all(found[spec] == "CPU" for spec in fits), found
    assert all(found[spec] == "no" for spec in does_not_fit), found


def test_the_kv_pool_and_its_type_count() -> None:
    """Llama 3.1 8B's KV takes 128 KiB per token in f16: with 64k tokens that is 8 GiB more."""
    entry = resolve("llama-3.1-8b", ENTRIES)
    assert entry.kv_bytes(1) == 131072
    box = Machine(12 * GIB)
    assert where(box, pool_tokens=16384)["llama-3.1-8b:q4_k_m"] == "CPU"
    assert where(box, pool_tokens=65536)["llama-3.1-8b:q4_k_m"] == "no"
    assert where(box, pool_tokens=65536, kv_type="q4_0")["llama-3.1-8b:q4_k_m"] == "CPU"


def test_a_gpu_with_room_takes_the_model_and_its_kv_pool() -> None:
    """8 GiB free on one card: 7B Q4_K_M (4.4 GiB + 0.9 GiB of KV) runs there, 14B falls back
    to RAM (32 GiB), and two cards add up (llama.cpp splits the layers)."""
    one = Machine(32 * GIB, (Gpu("CUDA0", 8 * GIB),), cores=8)
    found = where(one)
    assert found["qwen2.5-7b:q4_k_m"] == "GPU"
    assert found["qwen2.5-14b:q4_k_m"] == "CPU"
    two = Machine(32 * GIB, (Gpu("CUDA0", 8 * GIB), Gpu("CUDA1", 8 * GIB)), cores=8)
    assert where(two)["qwen2.5-14b:q4_k_m"] == "GPU"
    no_room = Machine(4 * GIB, (Gpu("Vulkan0", GIB // 2),))
    assert where(no_room)["qwen2.5-7b:q4_k_m"] == "no"


def test_unknown_memory_says_so() -> None:
    assert set(where(Machine(None)).values()) == {"?"}


def test_speed_scales_with_file_size_on_the_same_device() -> None:
    """Measured 40 tokens/s with a 1 GiB file on the CPU: a 2 GiB file ~20, a GPU row none."""
    speed = Speed(40.0, GIB, on_gpu=False)
    machine = Machine(64 * GIB, (Gpu("CUDA0", 2 * GIB),))
    found = {
        r.entry.spec: r
        for r in rows(ENTRIES, machine, pool_tokens=POOL, saved_bytes=SAVED, speed=speed)
    }
    three_b = found["qwen2.5-3b:q4_k_m"]
    assert three_b.runs_on == "CPU"
    assert three_b.tokens_per_s == pytest.approx(40.0 * GIB / three_b.entry.size_bytes)
    assert found["qwen2.5-0.5b:q4_k_m"].runs_on == "GPU"
    assert found["qwen2.5-0.5b:q4_k_m"].tokens_per_s is None
    tight = Machine(GIB)
    small = rows(ENTRIES, tight, pool_tokens=POOL, speed=speed)
    assert all(r.tokens_per_s is None for r in small if r.runs_on == "no")


def test_the_rough_figure_is_stated() -> None:
    rough = rough_speed()
    assert not rough.measured
    assert rough.scaled(2 * 10**9) == pytest.approx(5.0)
    assert "rough figure" in speed_text(rough)
    assert "measured here" in speed_text(Speed(12.0, GIB))


def test_the_table_marks_the_configured_model() -> None:
    machine = Machine(6 * GIB, cores=2)
    found = rows(ENTRIES, machine, pool_tokens=POOL, saved_bytes=SAVED)
    lines = table(found, current_file="Qwen2.5-1.5B-Instruct-Q4_K_M.gguf")
    assert lines[0].split() == ["model", "params", "quant", "file", "needs", "fits", "tokens/s"]
    assert len(lines) == len(ENTRIES) + 1
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1 and "qwen2.5-1.5b:q4_k_m" in marked[0]
    assert "0.9 GiB" in marked[0] and " CPU " in marked[0]
    assert machine_text(machine) == "2 cores, 6.0 GiB memory available, no GPU"
