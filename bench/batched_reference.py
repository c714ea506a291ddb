"""P6's reference: raw llama.cpp decoding N sequences at once, one token each per llama_decode.

What hearthbot's step loop is measured against (issue #14): a bare loop over the low-level API
with the daemon's default context layout (a KV window per sequence, bot.model.llama_cpp.loader;
the rows of a step in sequence order, as the engine puts them), one sampler
chain per sequence built as the engine builds it (bot.model.llama_cpp.sampler), a different
prompt per sequence, end-of-generation tokens banned in C so every sequence generates
`--tokens` tokens, and each drawn token detokenized as the engine does. Prompts are evaluated
first and not timed. After a warm-up, the sizes N are measured in turn (1, 2, 4, 1, 2, 4, ...)
so that their ratios come from one stretch of time; the figures are medians.

With `--engine`, hearthbot's backend (bot.model.llama_cpp.backend) runs the same N replies
(same prompts, sampler chains, seeds and lengths) right after each reference run, timed from
the replies' first token to their last: its aggregate ÷ the reference's is the engine's share
of P6 (the daemon's own cost comes on top).

    python -m bench.batched_reference [--model FILE | --tiny] [--tokens 64] [--ns 1,2,4]
                                      [--repeats 3] [--threads N] [--no-repack] [--engine]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, cast

import llama_cpp

from bench.harness import real_model, repack, table, tiny_model, write
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.llama_cpp.batch import StepBatch
from bot.model.llama_cpp.loader import LoadedModel, PoolShape, VocabView
from bot.model.llama_cpp.sampler import ReplySampler
from bot.model.template import ChatText
from bot.model.types import GenerationRequest
from bot.personas import Sampling

QUESTION = "Write a long story about a lighthouse keeper and a storm."
STEP_TOKENS = 512


class Reference:
    """The model, one context shaped like the engine's, and the loop."""

    def __init__(self, path: Path, max_n: int, tokens: int, threads: int, repack: bool) -> None:
        self.tokens = tokens
        # Laid out as the daemon's default (kv_layout "slots"): a window per sequence.
        shape = PoolShape(
            pool_tokens=max_n * (256 + tokens),
            n_seq_max=max_n,
            step_tokens=STEP_TOKENS,
            n_threads=threads,
            unified=False,
        )
        self.loaded = LoadedModel(path, shape, repack=repack)
        self.text = ChatText(cast(llama_cpp.Llama, VocabView(self.loaded.model)))
        self.batch = StepBatch(STEP_TOKENS)
        self.sampling = Sampling(temperature=0.7, max_tokens=tokens)

    def prompt(self, seq: int) -> list[int]:
        return self.text.prompt_tokens([{"role": "user", "content": f"({seq}) {QUESTION}"}])

    def run(self, n: int, tokens: int) -> float:
        """Aggregate tokens/s of n sequences generating `tokens` tokens each."""
        loaded, batch = self.loaded, self.batch
        ctx, model = loaded.ctx, loaded.model
        llama_cpp.llama_memory_clear(loaded.memory, True)
        banned = self.text.eog_tokens()
        chains = [ReplySampler(self.sampling, 1000 + s, model.n_vocab(), banned) for s in range(n)]
        positions, drawn = [], []
        for seq in range(n):  # prompts, one sequence at a time (not timed)
            prompt = self.prompt(seq)
            for start in range(0, len(prompt), STEP_TOKENS):
                part = prompt[start : start + STEP_TOKENS]
                batch.clear()
                last = batch.add_run(part, start, seq, start + len(part) == len(prompt))
                assert batch.decode(ctx.ctx) == 0
            drawn.append(chains[seq].sample(ctx, last))
            positions.append(len(prompt))
        started = time.perf_counter()
        for _ in range(tokens - 1):
            batch.clear()
            for seq in range(n):
                batch.add(drawn[seq], positions[seq], seq, True)
                positions[seq] += 1
            assert batch.decode(ctx.ctx) == 0
            for seq in range(n):
                drawn[seq] = chains[seq].sample(ctx, seq)
                model.detokenize([drawn[seq]])
        elapsed = time.perf_counter() - started
        for chain in chains:
            chain.close()
        return n * (tokens - 1) / elapsed

    def close(self) -> None:
        self.batch.close()
        self.loaded.close()


async def engine_run(backend: LlamaCppBackend, reference: Reference, n: int, tokens: int) -> float:
    """Aggregate tokens/s of the backend generating n replies at once, first token to last."""
    await backend.forget()
    sampling = reference.sampling.model_copy(update={"max_tokens": tokens})
    requests = [
        GenerationRequest(
            messages=(),
            sampling=sampling,
            seed=1000 + seq,
            ban_eos=True,
            prompt=reference.prompt(seq),
            cache_key=f"bench {seq}",
        )
        for seq in range(n)
    ]
    generations = [backend.start(r) for r in requests]
    for generation in generations:
        _ = [d async for d in generation]
    results = [g.result for g in generations]
    assert all(r.generated_tokens == tokens for r in results), results
    # Admitted in one step, so their clocks start together.
    span = max(r.total_s for r in results) - max(r.first_token_s or 0.0 for r in results)
    return n * (tokens - 1) / span


async def measure(
    model: Path,
    ns: list[int],
    tokens: int,
    repeats: int,
    threads: int,
    repack: bool,
    with_engine: bool,
) -> dict[str, Any]:
    reference = Reference(model, max(ns), tokens, threads, repack)
    backend = None
    if with_engine:
        backend = await LlamaCppBackend.load(
            model,
            n_ctx=1024,
            n_threads=threads,
            parallel=max(ns),
            repack=repack,
            kv_layout="slots",
        )
    runs: dict[int, list[float]] = {n: [] for n in ns}
    engine: dict[int, list[float]] = {n: [] for n in ns}
    try:
        reference.run(1, min(16, tokens))  # warm-up: first touches of the weights
        if backend is not None:
            await engine_run(backend, reference, 1, min(16, tokens))
        for _ in range(repeats):
            for n in ns:
                runs[n].append(reference.run(n, tokens))
                if backend is not None:
                    engine[n].append(await engine_run(backend, reference, n, tokens))
    finally:
        reference.close()
        if backend is not None:
            await backend.close()
    aggregate = {n: statistics.median(r) for n, r in runs.items()}
    result: dict[str, Any] = {
        "model": str(model),
        "tokens": tokens,
        "repeats": repeats,
        "threads": threads,
        "repack": repack,
        "runs": {str(n): r for n, r in runs.items()},
        "aggregate_tok_s": {str(n): a for n, a in aggregate.items()},
        "per_sequence_tok_s": {str(n): a / n for n, a in aggregate.items()},
        "scale": {str(n): aggregate[n] / aggregate[ns[0]] for n in ns},
    }
    if backend is not None:
        # Each engine run ÷ the reference run just before it, then the median.
        ratios = {
            n: statistics.median(e / r for e, r in zip(engine[n], runs[n], strict=True)) for n in ns
        }
        result["engine_runs"] = {str(n): e for n, e in engine.items()}
        result["engine_aggregate_tok_s"] = {str(n): statistics.median(e) for n, e in engine.items()}
        result["engine_ratio"] = {str(n): r for n, r in ratios.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="the test suite's generated model")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ns", default="1,2,4", help="sequences at once, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engine", action="store_true", help="also hearthbot's backend")
    parser.add_argument(
        "--no-repack",
        action="store_true",
        help="no CPU weight repacking (for VMs that report AMX but trap on it; also "
        "HEARTHBOT_BENCH_NO_REPACK=1)",
    )
    args = parser.parse_args()
    model = args.model or (tiny_model() if args.tiny else real_model())
    ns = [int(n) for n in args.ns.split(",")]
    result = asyncio.run(
        measure(
            model,
            ns,
            args.tokens,
            args.repeats,
            args.threads,
            repack() and not args.no_repack,
            args.engine,
        )
    )
    write("batched_reference" + ("-tiny" if args.tiny else ""), result)
    header = ["N", "aggregate tok/s", "per sequence", f"÷ N={ns[0]}"]
    rows: list[list[object]] = [
        [
            n,
            f"{result['aggregate_tok_s'][str(n)]:.1f}",
            f"{result['per_sequence_tok_s'][str(n)]:.1f}",
            f"{result['scale'][str(n)]:.2f}",
        ]
        for n in ns
    ]
    figures = {f"ref_n{n}": round(result["aggregate_tok_s"][str(n)], 2) for n in ns}
    if args.engine:
        header += ["engine tok/s", "engine ÷ reference"]
        for row, n in zip(rows, ns, strict=True):
            row += [
                f"{result['engine_aggregate_tok_s'][str(n)]:.1f}",
                f"{result['engine_ratio'][str(n)]:.3f}",
            ]
            figures[f"engine_ratio_n{n}"] = round(result["engine_ratio"][str(n)], 3)
    print(table(rows, header))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
