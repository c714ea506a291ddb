"""P1: generation tokens/s through the whole pipeline ÷ raw llama-cpp-python.

The pipeline run is a message typed into the console adapter (its stdin is a pipe), through
the daemon, queue, context builder, model worker and back to the console's stdout. The raw
run is `Llama.create_completion(stream=True)` on a `Llama` of the same file, same prompt tokens,
sampling parameters, seed and max_tokens. End-of-generation tokens are banned in both, in C
(a logit-bias sampler at the head of the chain), so every run generates exactly max_tokens.
Runs are interleaved (pipeline, raw, bare, pipeline, ...). tokens/s counts from the first
token to the last, so prompt evaluation is not part of it. A third column, "bare", is the
lowest-level loop the binding offers (`Llama.eval` + the engine's sampler: the repeat penalty
on its window, then a C chain): the ceiling.

    python -m bench.throughput [--model FILE] [--max-tokens 128] [--repeats 5]
Goal: pipeline ÷ create_completion ≥ 0.97 with the real model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import llama_cpp
import llama_cpp._internals as internals

from adapters.console import ConsoleAdapter
from bench.harness import (
    RecordingEngine,
    real_model,
    repack,
    summary,
    table,
    tiny_model,
    write,
)
from bot import logs
from bot.daemon import Daemon
from bot.model.llama_cpp.placement import Offload
from bot.model.llama_cpp.sampler import ReplySampler
from bot.personas import Sampling, load_personas
from bot.settings import load_settings
from bot.store import Store

SEED = 1234
QUESTION = "Write a long story about a lighthouse keeper and a storm."


def persona(sampling: Sampling) -> str:
    return (
        'description = "benchmark"\n'
        f"temperature = {sampling.temperature}\ntop_p = {sampling.top_p}\n"
        f"top_k = {sampling.top_k}\nmin_p = {sampling.min_p}\n"
        f"repeat_penalty = {sampling.repeat_penalty}\nmax_tokens = {sampling.max_tokens}\n"
        'system_prompt = "You are a helpful assistant."\n'
    )


class TimedOutput:
    """The console's stdout: notes when text arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, text: str) -> int:
        if text:
            self.times.append(time.perf_counter())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class BannedSampler(internals.LlamaSampler):
    """What create_completion builds, with end-of-generation tokens banned first (in C)."""

    banned: ClassVar[dict[int, float]] = {}
    n_vocab: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.add_logit_bias(self.n_vocab, self.banned)


def raw_llama(model: Path, n_ctx: int, threads: int) -> Any:
    """llama-cpp-python's own Llama on the file, offloaded as the backend is by default (all
    layers with a GPU backend; Llama's own default is none); with repacking off as the backend
    has it (Llama has no parameter for it, so its model parameters are edited as it reads
    them)."""
    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "n_threads": threads, "verbose": False}
    kwargs["n_gpu_layers"] = Offload().layers()
    if repack():
        return llama_cpp.Llama(str(model), **kwargs)
    low = llama_cpp.llama_cpp
    defaults = low.llama_model_default_params

    def without_repack() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_repack
    try:
        return llama_cpp.Llama(str(model), **kwargs)
    finally:
        low.llama_model_default_params = defaults


def raw_completion(llm: Any, prompt: list[int], s: Sampling) -> tuple[int, float]:
    original = internals.LlamaSampler
    internals.LlamaSampler = BannedSampler  # type: ignore[misc]
    try:
        times = []
        for _chunk in llm.create_completion(
            prompt,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=SEED,
            stream=True,
        ):
            times.append(time.perf_counter())
    finally:
        internals.LlamaSampler = original  # type: ignore[misc]
    return s.max_tokens, times[-1] - times[0]


def bare_loop(llm: Any, prompt: list[int], s: Sampling) -> tuple[int, float]:
    # The engine's sampler (bot.model.llama_cpp.sampler), so the ceiling samples as it does.
    chain = ReplySampler(s, SEED, llm.n_vocab(), list(BannedSampler.banned))
    llm.n_tokens = 0
    llm.eval(prompt)
    first = time.perf_counter()
    for i in range(s.max_tokens):
        token = chain.sample(llm._ctx, -1)
        llm.detokenize([token])
        if i < s.max_tokens - 1:
            llm.eval([token])
    chain.close()
    return s.max_tokens, time.perf_counter() - first


async def measure(model: Path, max_tokens: int, repeats: int, n_ctx: int) -> dict[str, Any]:
    logs.configure("warning")
    sampling = Sampling(temperature=0.7, max_tokens=max_tokens)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        personas_dir = Path(tmp) / "personas"
        personas_dir.mkdir()
        (personas_dir / "bench.toml").write_text(persona(sampling))
        settings = load_settings(
            None, bot={"data_dir": tmp, "personas_dir": personas_dir, "default_persona": "bench"}
        )
        engine = await RecordingEngine.load(
            model, n_ctx=n_ctx, n_threads=threads, parallel=1, repack=repack()
        )
        engine.force = {"ban_eos": True, "seed": SEED}
        # The reference: llama-cpp-python's own Llama on the same file, run while the daemon
        # is idle (the backend builds its context from the lower layer, with no Llama).
        llm = await asyncio.to_thread(raw_llama, model, n_ctx, threads)
        BannedSampler.n_vocab = llm.n_vocab()
        BannedSampler.banned = dict.fromkeys(engine._text.eog_tokens(), float("-inf"))
        store = await Store.open(Path(tmp) / "hearthbot.db")
        read_fd, write_fd = os.pipe()
        stdin = os.fdopen(read_fd, "r")
        out = TimedOutput()
        console = ConsoleAdapter(stdin, out, interactive=False)  # type: ignore[arg-type]
        daemon = Daemon(settings, store, engine, load_personas(personas_dir), {"console": console})  # type: ignore[dict-item]
        await daemon.start()
        system = load_personas(personas_dir).personas["bench"].system_prompt
        prompt = engine.prompt_tokens(
            [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
        )

        async def ask() -> float:
            """Type the question; tokens/s of the answer as the console printed it."""
            await store.reset_channel("console:local")  # the same prompt every time
            out.times.clear()
            before = len(engine.generations)
            os.write(write_fd, (QUESTION + "\n").encode())
            while len(engine.generations) == before:  # noqa: ASYNC110 (a bench, not a server)
                await asyncio.sleep(0.01)
            await daemon.wait_idle()
            result = engine.generations[-1].result
            assert result.generated_tokens == max_tokens, result
            return (max_tokens - 1) / (out.times[-1] - out.times[0])

        runs: dict[str, list[float]] = {"pipeline": [], "create_completion": [], "bare": []}
        for _ in range(repeats):
            runs["pipeline"].append(await ask())
            n, span = await asyncio.to_thread(raw_completion, llm, prompt, sampling)
            runs["create_completion"].append((n - 1) / span)
            n, span = await asyncio.to_thread(bare_loop, llm, prompt, sampling)
            runs["bare"].append((n - 1) / span)
        os.close(write_fd)
        await daemon.stop()
        await store.close()
        await engine.close()
        llm.close()
    ratios = [p / r for p, r in zip(runs["pipeline"], runs["create_completion"], strict=True)]
    ratios_bare = [p / r for p, r in zip(runs["pipeline"], runs["bare"], strict=True)]
    return {
        "model": str(model),
        "max_tokens": max_tokens,
        "repeats": repeats,
        "threads": threads,
        "prompt_tokens": len(prompt),
        "tokens_per_s": {name: summary(values) for name, values in runs.items()},
        "ratio_vs_create_completion": summary(ratios),
        "ratio_vs_bare": summary(ratios_bare),
        "ratios": ratios,
        "spread_pct": 100 * statistics.pstdev(ratios) / statistics.fmean(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF (default: the real bench model)")
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    model = tiny_model() if args.tiny else args.model or real_model()
    result = asyncio.run(measure(model, args.max_tokens, args.repeats, args.n_ctx))
    rows = [
        [name, f"{s['p50']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}"]
        for name, s in result["tokens_per_s"].items()
    ]
    print(f"{model.name}: {args.max_tokens} tokens × {args.repeats} interleaved runs, tokens/s")
    print(table(rows, ["", "median", "min", "max"]))
    r = result["ratio_vs_create_completion"]
    print(
        f"pipeline ÷ create_completion: median {r['p50']:.3f} (min {r['min']:.3f}, max "
        f"{r['max']:.3f}, spread {result['spread_pct']:.1f}%); goal ≥ 0.97: "
        f"{'met' if r['p50'] >= 0.97 else 'NOT met'}"
    )
    b = result["ratio_vs_bare"]
    print(f"pipeline ÷ bare eval loop: median {b['p50']:.3f}")
    name = "throughput-tiny" if args.tiny else "throughput"
    print(f"wrote {write(name, result)}")


if __name__ == "__main__":
    main()
