"""KV_q8_ratio and P2_q8: what `[model] kv_type = "q8_0"` saves and what reuse still gives.

KV_q8_ratio: the KV bytes one more token adds to a sequence's state with q8_0 ÷ with f16
(llama_state_seq_get_size at two lengths; expected 34/64 ≈ 0.53: a q8_0 block holds 32 values
in 34 bytes). KV_q4_ratio likewise (18/64 ≈ 0.28). P2_q8: bench.kv_reuse's P2 (warm ÷ cold time
to first token of a follow-up) with a q8_0 cache, `--rounds` of follow-ups in every channel
(each paired with the same prompt cold). A q8_0 V cache needs flash attention (llama.cpp turns
it on for "auto" and refuses the context with it off), which makes every cold read on the CPU
about twice as slow as f16's: one round (4 pairs) by default, the median of their ratios (their
spread is in the JSON). Loads without weight repacking by default (this VM traps on AMX
repacking).

    python -m bench.kv_type [--model FILE | --tiny] [--length 1500] [--channels 4] [--rounds 1]
                            [--repack]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

import llama_cpp

from bench.harness import real_model, tiny_model, write
from bench.kv_reuse import rotation
from bot import logs
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.llama_cpp.loader import LoadedModel, PoolShape
from bot.model.llama_cpp.placement import Attention

# What llama.cpp writes per cell of a sequence's state besides K and V: its position, its
# number of sequence ids and the id (4 bytes each).
CELL_HEADER_BYTES = 12
LENGTHS = (64, 192)


def kv_bytes_per_token(model: Path, kv_type: str, repack: bool = False) -> float:
    """K and V bytes one more token adds to a sequence's state, as llama.cpp stores them."""
    shape = PoolShape(512, 1, 256, os.cpu_count() or 1, Attention(kv_type, "auto"))
    loaded = LoadedModel(model, shape, repack=repack)
    batch = llama_cpp.llama_batch_init(max(LENGTHS), 0, 1)
    sizes = []
    try:
        for n in LENGTHS:
            llama_cpp.llama_memory_seq_rm(loaded.memory, 0, -1, -1)
            for i in range(n):
                batch.token[i] = 300 + i
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == n - 1
            batch.n_tokens = n
            if llama_cpp.llama_decode(loaded.ctx.ctx, batch) != 0:
                raise RuntimeError(f"llama_decode failed with kv_type {kv_type}")
            sizes.append(llama_cpp.llama_state_seq_get_size(loaded.ctx.ctx, 0))
    finally:
        llama_cpp.llama_batch_free(batch)
        loaded.close()
    return (sizes[1] - sizes[0]) / (LENGTHS[1] - LENGTHS[0]) - CELL_HEADER_BYTES


async def p2(
    model: Path, kv_type: str, length: int, channels: int, rounds: int, repack: bool
) -> list[float]:
    """Each follow-up's warm ÷ cold time to first token."""
    engine = await LlamaCppBackend.load(
        model,
        n_ctx=max(4096, length * 2),
        n_threads=os.cpu_count() or 1,
        kv_cache_mb=1024,
        repack=repack,
        attention=Attention(kv_type, "auto"),
    )
    try:
        warm, cold = await rotation(engine, channels, length, rounds)
    finally:
        await engine.close()
    return [w / c for w, c in zip(warm, cold, strict=True)]


def measure(model: Path, length: int, channels: int, rounds: int, repack: bool) -> dict[str, Any]:
    per_token = {t: kv_bytes_per_token(model, t, repack) for t in ("f16", "q8_0", "q4_0")}
    ratios = asyncio.run(p2(model, "q8_0", length, channels, rounds, repack))
    return {
        "model": str(model),
        "kv_bytes_per_token": per_token,
        "KV_q8_ratio": per_token["q8_0"] / per_token["f16"],
        "KV_q4_ratio": per_token["q4_0"] / per_token["f16"],
        "P2_q8": statistics.median(ratios),
        "P2_q8_ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="follow-ups per channel")
    parser.add_argument("--repack", action="store_true", help="llama.cpp's CPU weight repacking")
    args = parser.parse_args()
    logs.configure("warning")
    # The tiny model's heads of 16 values are narrower than a q8_0 block: its 32-wide variant.
    model = tiny_model(wide_heads=True) if args.tiny else args.model or real_model()
    result = measure(model, args.length, args.channels, args.rounds, args.repack)
    print(
        f"{model.name}: KV bytes per token {result['kv_bytes_per_token']}; q8_0 ÷ f16 = "
        f"{result['KV_q8_ratio']:.3f} (expect 0.53), q4_0 ÷ f16 = {result['KV_q4_ratio']:.3f}; "
        f"P2 with q8_0 = {result['P2_q8']:.3f} "
        f"({min(result['P2_q8_ratios']):.3f}–{max(result['P2_q8_ratios']):.3f})"
    )
    print(f"wrote {write('kv_type' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
