"""IDLE_parked_ratio: what idle channels in the KV pool cost a reply, parked (the default) or not.

`--idle` channels with conversations of about `--length` tokens have spoken and sit idle; then
one more channel asks follow-ups of `--tokens` tokens each. llama.cpp's attention covers every
cell in use of the unified pool (masked, but computed), so idle channels left resident slow
every step of that reply. With parking (KvPool.park, the default) its first step saves them as
snapshots; without (`idle_cells` unbounded: the engine before parking) they stay. Both engines
are loaded in this process and measured in turn, medians of `--repeats`:

- IDLE_parked_ratio: the reply's tokens/s parked ÷ resident (> 1: parking pays);
- IDLE_park_stall_s: what parking added to the first follow-up's time to first token (the
  snapshots' copy), parked minus resident.

Loads without weight repacking when HEARTHBOT_BENCH_NO_REPACK=1 (this VM traps on AMX).

    python -m bench.idle_cells [--model FILE | --tiny] [--idle 6] [--length 1200] [--tokens 48]
                               [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

from bench.harness import real_model, repack, table, tiny_model, write
from bench.kv_reuse import conversation
from bot import logs
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import GenerationRequest
from bot.personas import Sampling

UNBOUNDED = 10**9


async def reply(
    engine: LlamaCppBackend, messages: list[dict[str, str]], key: str, tokens: int
) -> tuple[float, float]:
    """(time to first token, tokens/s after it) of one reply of exactly `tokens` tokens."""
    request = GenerationRequest(
        messages=messages,
        sampling=Sampling(temperature=0.7, max_tokens=tokens),
        seed=7,
        cache_key=key,
        ban_eos=True,
    )
    generation = engine.start(request)
    async for _ in generation:
        pass
    result = generation.result
    assert result.first_token_s is not None and result.generated_tokens == tokens
    return result.first_token_s, (tokens - 1) / (result.total_s - result.first_token_s)


async def prepare(engine: LlamaCppBackend, idle: int, length: int) -> list[dict[str, str]]:
    """The idle channels' first turns, and the asking channel's conversation (read once)."""
    for channel in range(idle):
        await reply(engine, conversation(engine, channel, length), f"idle{channel}", 2)
    asking = conversation(engine, idle, length // 4)
    await reply(engine, asking, "asking", 2)
    return asking


async def measure(
    model: Path, idle: int, length: int, tokens: int, repeats: int, threads: int
) -> dict[str, Any]:
    sides: dict[str, LlamaCppBackend] = {}
    for name, cells in (("parked", None), ("resident", UNBOUNDED)):
        sides[name] = await LlamaCppBackend.load(
            model,
            n_ctx=2 * length,
            n_threads=threads,
            kv_cache_mb=1024,
            parallel=4,
            idle_cells=cells,
            repack=repack(),
        )
    try:
        asking = {name: await prepare(engine, idle, length) for name, engine in sides.items()}
        first = {name: await reply(e, asking[name], "asking", tokens) for name, e in sides.items()}
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(repeats):
            for name, engine in sides.items():
                rates[name].append((await reply(engine, asking[name], "asking", tokens))[1])
        resident_left = {name: engine.stats().resident for name, engine in sides.items()}
    finally:
        for engine in sides.values():
            await engine.close()
    ratios = [p / r for p, r in zip(rates["parked"], rates["resident"], strict=True)]
    return {
        "model": str(model),
        "idle_channels": idle,
        "length": length,
        "tokens": tokens,
        "threads": threads,
        "repack": repack(),
        "tok_s": rates,
        "first_ttft_s": {name: f[0] for name, f in first.items()},
        "resident_after": resident_left,
        "IDLE_parked_ratio": statistics.median(ratios),
        "IDLE_park_stall_s": first["parked"][0] - first["resident"][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--idle", type=int, default=6)
    parser.add_argument("--length", type=int, default=1200)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    result = asyncio.run(
        measure(model, args.idle, args.length, args.tokens, args.repeats, args.threads)
    )
    rows = [
        [
            name,
            f"{statistics.median(result['tok_s'][name]):.1f}",
            f"{result['first_ttft_s'][name]:.3f}",
            result["resident_after"][name],
        ]
        for name in ("parked", "resident")
    ]
    print(
        f"{model.name}: {args.idle} idle channels of ~{args.length} tokens, "
        f"{args.tokens}-token replies, {args.repeats} runs in turn"
    )
    print(table(rows, ["idle channels", "reply tok/s", "first TTFT s", "resident after"]))
    print(
        f"IDLE_parked_ratio {result['IDLE_parked_ratio']:.2f} (> 1: parking pays); "
        f"parking stall {result['IDLE_park_stall_s']:+.3f} s"
    )
    print(f"wrote {write('idle_cells' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
