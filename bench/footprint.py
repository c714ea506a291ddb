"""Energy per reply (issue #19): joules per 100 generated tokens, one reply alone and four at
once, and what KV reuse saves on a follow-up in a long conversation (warm vs the same prompt
evaluated cold), with the energy source the box offers (bot.model.energy: on a VM without
powercap, the CPU-time estimate).

    python -m bench.footprint [--model FILE | --tiny] [--tokens 128] [--repeats 3] [--threads N]
                              [--no-repack]
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
from bot.model.energy import choose_source
from bot.model.llama_cpp.backend import LlamaCppBackend, runs_on_gpu
from bot.model.types import GenerationRequest, GenerationResult
from bot.personas import Sampling
from bot.settings import FootprintSettings

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def reply(engine: LlamaCppBackend, request: GenerationRequest) -> GenerationResult:
    generation = engine.start(request)
    async for _ in generation:
        pass
    return generation.result


def per_100(results: list[GenerationResult]) -> float:
    joules = sum(r.energy_j or 0.0 for r in results)
    return 100 * joules / sum(r.generated_tokens for r in results)


async def generation_energy(
    engine: LlamaCppBackend, tokens: int, at_once: int, repeats: int
) -> list[float]:
    """Joules per 100 generated tokens, `at_once` replies together, `repeats` times."""
    sampling = Sampling(temperature=0.7, max_tokens=tokens)
    figures = []
    for r in range(repeats):
        requests = [
            GenerationRequest(PROMPT, sampling, seed=r * 10 + i, cache_key=f"g{i}", ban_eos=True)
            for i in range(at_once)
        ]
        results = await asyncio.gather(*(reply(engine, q) for q in requests))
        await engine.forget()
        figures.append(per_100(list(results)))
    return figures


async def reuse_energy(
    engine: LlamaCppBackend, length: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Joules of a follow-up whose conversation's KV is warm, and of the same prompt cold."""
    sampling = Sampling(temperature=0.7, max_tokens=8)
    warm, cold = [], []
    talk = conversation(engine, 0, length)
    await reply(engine, GenerationRequest(talk, sampling, seed=1, cache_key="c"))
    for r in range(repeats):
        talk.append({"role": "assistant", "content": "It was built long ago."})
        talk.append({"role": "user", "content": f"And what happened next? ({r})"})
        hot = await reply(engine, GenerationRequest(list(talk), sampling, seed=r, cache_key="c"))
        assert hot.reused_tokens > 0
        again = GenerationRequest(list(talk), sampling, seed=r, cache_key=f"cold{r}", cold=True)
        fresh = await reply(engine, again)
        warm.append(hot.energy_j or 0.0)
        cold.append(fresh.energy_j or 0.0)
    return warm, cold


async def measure(
    model: Path, tokens: int, repeats: int, length: int, repack: bool, threads: int
) -> dict[str, Any]:
    watts = FootprintSettings.model_validate({}).watts_per_core
    choice = choose_source(watts, on_gpu=runs_on_gpu())
    engine = await LlamaCppBackend.load(
        model,
        n_ctx=max(2048, length * 2),
        n_threads=threads,
        parallel=4,
        kv_cache_mb=256,
        repack=repack,
        energy=choice.source,
    )
    try:
        # Each figure is printed as soon as it is measured: a busy box may take long.
        alone = await generation_energy(engine, tokens, 1, repeats)
        print(f"alone: {alone} J per 100 tokens", flush=True)
        four = await generation_energy(engine, tokens, 4, repeats)
        print(f"four at once: {four} J per 100 tokens", flush=True)
        warm, cold = await reuse_energy(engine, length, repeats)
        print(f"follow-up: warm {warm} J, cold {cold} J", flush=True)
    finally:
        await engine.close()
    return {
        "model": str(model),
        "source": choice.source.name,
        "why": choice.why,
        "watts_per_core": watts,
        "threads": threads,
        "tokens": tokens,
        "j_per_100_alone": statistics.median(alone),
        "j_per_100_four": statistics.median(four),
        "conversation_tokens": length,
        "followup_j_warm": statistics.median(warm),
        "followup_j_cold": statistics.median(cold),
        "runs": {"alone": alone, "four": four, "warm": warm, "cold": cold},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="model threads; on a box shared with other work use 1, since llama.cpp's threads "
        "spin while waiting for each other and a descheduled one inflates the CPU time",
    )
    parser.add_argument(
        "--no-repack",
        action="store_true",
        help="no CPU weight repacking (for VMs that report AMX but trap on it; also "
        "HEARTHBOT_BENCH_NO_REPACK=1)",
    )
    args = parser.parse_args()
    logs.configure("warning", "console")
    model = tiny_model() if args.tiny else (args.model or real_model())
    result = asyncio.run(
        measure(
            model,
            args.tokens,
            args.repeats,
            args.length,
            repack() and not args.no_repack,
            args.threads,
        )
    )
    wh = 1 / 3600
    print(f"source: {result['source']} ({result['why']})")
    print(
        table(
            [
                [name, f"{j:.1f}", f"{j * wh:.4f}"]
                for name, j in [
                    ("per 100 tokens, one reply", result["j_per_100_alone"]),
                    ("per 100 tokens, four at once", result["j_per_100_four"]),
                    ("follow-up, warm KV", result["followup_j_warm"]),
                    ("follow-up, cold", result["followup_j_cold"]),
                ]
            ],
            ["figure", "joules", "Wh"],
        )
    )
    write("footprint-tiny" if args.tiny else "footprint", result)


if __name__ == "__main__":
    main()
