"""P2: time to first token of a follow-up in a long conversation, warm vs cold.

Several channels take turns; each has a conversation of about `--length` tokens. A follow-up
in one channel finds its KV state saved (per-channel reuse) or has to read the whole
conversation again. P2 = warm TTFT ÷ the same prompt evaluated cold. Goal: ≤ 0.15 with 4
channels and 1,500 tokens. `--sweep` measures TTFT against conversation length with and
without reuse, for 1 and 4 channels, for docs/performance.md's plot.

`--fixed-seed`: P2_fixed_seed, the same with the first channel's persona at a fixed seed (its
replies decode in the fixed-seed lane, bot.model.llama_cpp.solo; the other channels as usual),
measured on that channel's turns; the cold reference runs in a second backend, so that it does
not clear what the lane keeps of the channel. Goal: ≤ 0.3.

    python -m bench.kv_reuse [--model FILE | --tiny] [--length 1500] [--channels 4] [--sweep]
                             [--fixed-seed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

from bench.harness import real_model, repack, summary, table, tiny_model, write
from bot import logs
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import GenerationRequest
from bot.personas import Sampling

SYSTEM = "You are a helpful assistant in a busy group chat. Answer briefly."
QUESTION = "Tell me about the history of the lighthouse on the northern cliff, please."
ANSWER = "The lighthouse was built long ago by the fishing village to guide boats home."
SAMPLING = Sampling(temperature=0.7, max_tokens=8)


def conversation(engine: LlamaCppBackend, channel: int, length: int) -> list[dict[str, str]]:
    """A conversation of about `length` prompt tokens, different per channel."""
    messages = [{"role": "system", "content": f"{SYSTEM} (channel {channel})"}]
    turn = 0
    while len(engine.prompt_tokens(messages)) < length:
        messages.append({"role": "user", "content": f"{QUESTION} ({channel}.{turn})"})
        messages.append({"role": "assistant", "content": ANSWER})
        turn += 1
    messages.append({"role": "user", "content": f"{QUESTION} (first {channel})"})
    return messages


async def ttft(
    engine: LlamaCppBackend,
    messages: list[dict[str, str]],
    key: str | None,
    cold: bool,
    shares: list[float] | None = None,
) -> float:
    """`cold`: a fixed-seed reply (the fixed-seed lane); with no `key`, evaluated from scratch.
    `shares` gets the share of the prompt's tokens found in the KV cache."""
    request = GenerationRequest(
        messages=messages, sampling=SAMPLING, seed=7, cache_key=key, cold=cold
    )
    generation = engine.start(request)
    reply = "".join([d async for d in generation])
    messages.append({"role": "assistant", "content": reply.strip() or ANSWER})
    result = generation.result
    assert result.first_token_s is not None
    if shares is not None:
        shares.append(result.reused_tokens / result.prompt_tokens)
    return result.first_token_s


async def rotation(
    engine: LlamaCppBackend,
    channels: int,
    length: int,
    rounds: int,
    with_cold: bool = True,
    fixed: LlamaCppBackend | None = None,
    shares: list[float] | None = None,
) -> tuple[list[float], list[float]]:
    """Channels take turns; returns (follow-up TTFTs, the same prompts evaluated cold). With
    `fixed` (a second backend, for the cold runs), channel 0 has a fixed seed and only its
    turns are measured; `shares` gets each measured follow-up's share of reused tokens."""
    talks = [conversation(engine, c, length) for c in range(channels)]
    for c, talk in enumerate(talks):  # first turns: everyone's conversation gets read once
        await ttft(engine, talk, f"c{c}", cold=fixed is not None and c == 0)
    warm, cold = [], []
    for r in range(rounds):
        for c, talk in enumerate(talks):
            measured = fixed is None or c == 0
            talk.append({"role": "user", "content": f"And what happened next? ({r})"})
            took = await ttft(
                engine, talk, f"c{c}", fixed is not None and c == 0, shares if measured else None
            )
            if measured:
                warm.append(took)
            if with_cold and measured:
                talk.pop()  # the reply just added: the cold run answers the same prompt
                # No key: nothing the fixed-seed lane keeps is reused.
                cold.append(await ttft(fixed or engine, list(talk), None, cold=True))
                talk.append({"role": "assistant", "content": ANSWER})
    return warm, cold


async def load(model: Path, n_ctx: int, kv_cache_mb: int, **shape: Any) -> LlamaCppBackend:
    """`shape`: more of LlamaCppBackend.load's arguments (parallel, kv_layout)."""
    threads = os.cpu_count() or 1
    return await LlamaCppBackend.load(
        model, n_ctx=n_ctx, n_threads=threads, kv_cache_mb=kv_cache_mb, repack=repack(), **shape
    )


async def measure(
    model: Path, length: int, channels: int, rounds: int, fixed_seed: bool
) -> dict[str, Any]:
    engine = await load(model, n_ctx=max(4096, length * 2), kv_cache_mb=1024)
    fixed = await load(model, n_ctx=max(4096, length * 2), kv_cache_mb=0) if fixed_seed else None
    try:
        warm, cold = await rotation(engine, channels, length, rounds, fixed=fixed)
    finally:
        await engine.close()
        if fixed is not None:
            await fixed.close()
    ratios = [w / c for w, c in zip(warm, cold, strict=True)]
    return {
        "model": str(model),
        "length": length,
        "channels": channels,
        "fixed_seed": fixed_seed,
        "warm_ttft_s": summary(warm),
        "cold_ttft_s": summary(cold),
        "P2": statistics.median(ratios),
        "ratios": ratios,
    }


async def sweep(model: Path, lengths: list[int], rounds: int) -> list[dict[str, Any]]:
    """Per-channel reuse on (the engine: resident channels in its pool, snapshots) and off
    (one slot and no snapshots: only the last channel's sequence stays, as in llama.cpp's one
    context), for 1 and 4 channels; plus the cold reference (the whole prompt read every
    time). Each row has its follow-ups' median TTFT and share of reused tokens."""
    rows = []
    n_ctx = max(4096, max(lengths) * 2)
    for channels in (1, 4):
        for reuse in (True, False):
            engine = await (
                load(model, n_ctx, kv_cache_mb=1024)
                if reuse
                else load(model, n_ctx, kv_cache_mb=0, parallel=1, kv_layout="slots")
            )
            try:
                for length in lengths:
                    with_cold = channels == 1 and reuse
                    shares: list[float] = []
                    warm, cold = await rotation(
                        engine, channels, length, rounds, with_cold, shares=shares
                    )
                    await engine.forget()
                    label = f"{channels} channel{'s' if channels > 1 else ''}, " + (
                        "per-channel reuse" if reuse else "no per-channel reuse"
                    )
                    rows.append(
                        {
                            "series": label,
                            "length": length,
                            "ttft_s": statistics.median(warm),
                            "reused_share": statistics.median(shares),
                        }
                    )
                    if cold:
                        rows.append(
                            {
                                "series": "cold (whole prompt)",
                                "length": length,
                                "ttft_s": statistics.median(cold),
                            }
                        )
            finally:
                await engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="TTFT against length, for the plot")
    parser.add_argument("--fixed-seed", action="store_true", help="P2_fixed_seed")
    parser.add_argument("--lengths", default="250,500,1000,1500,2000", help="for --sweep")
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    suffix = "-tiny" if args.tiny else ""
    if args.sweep:
        lengths = [int(n) for n in args.lengths.split(",")]
        rows = asyncio.run(sweep(model, lengths, rounds=args.rounds))
        print(
            table(
                [[r["series"], r["length"], f"{r['ttft_s']:.3f}"] for r in rows],
                ["series", "tokens", "TTFT s"],
            )
        )
        print(f"wrote {write('kv_sweep' + suffix, {'model': str(model), 'rows': rows})}")
        return
    result = asyncio.run(measure(model, args.length, args.channels, args.rounds, args.fixed_seed))
    figure, goal = ("P2_fixed_seed", 0.3) if args.fixed_seed else ("P2", 0.15)
    result[figure] = result.pop("P2")
    w, c = result["warm_ttft_s"], result["cold_ttft_s"]
    print(
        f"{model.name}: {args.channels} channels taking turns, ~{args.length}-token conversations"
        + (" (the first at a fixed seed, measured)" if args.fixed_seed else "")
    )
    print(
        table(
            [
                ["follow-up, warm", f"{w['p50']:.3f}", f"{w['max']:.3f}"],
                ["same prompt, cold", f"{c['p50']:.3f}", f"{c['max']:.3f}"],
            ],
            ["TTFT (s)", "median", "max"],
        )
    )
    print(f"{figure} = warm ÷ cold: {result[figure]:.3f} (goal ≤ {goal})")
    name = "kv_reuse" + ("-fixed_seed" if args.fixed_seed else "") + suffix
    print(f"wrote {write(name, result)}")


if __name__ == "__main__":
    main()
