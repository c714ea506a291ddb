"""P6 and P3_streaming: many channels generating at once, through the whole daemon.

P6: N channels (N = 1, 2, 4) each send a message at once to a daemon wired like `hearthbot run`
(bench.pipeline: store, queue, intake, answering, a recording adapter); their aggregate tokens/s
÷ raw llama.cpp decoding N sequences per `llama_decode` (bench.batched_reference: same sampler
chains, temperature 0.7, end tokens banned in C, so every reply is `--tokens` long) in the same
process, run right before it. Tokens are counted where the daemon receives them: each delta is
stamped when the event loop takes it from the model thread (so a slow event loop or a step loop
held up by the daemon shows), and the aggregate counts what arrived after the last channel's
first token until the last reply ended, as the reference counts from its first sampled tokens to
its last. Each batch shape is warmed up first; then N = 1, 2, 4, 1, 2, 4, ...; the ratios are the
medians of each daemon run ÷ the reference run just before it. Goal: ≥ 0.90 at every N.
P6_scale4: the daemon's N=4 ÷ N=1 aggregate ÷ the reference's; goal ≥ 0.90.

P3_streaming: time to first token (message handed to the daemon → first text at the daemon) of
a channel whose message arrives while 3 other channels stream (a quarter into their replies) ÷
the same message's on an idle bot (N=1's run, just before); the median. Goal: ≤ 2.0.

    python -m bench.batching [--model FILE | --tiny] [--tokens 64] [--repeats 5] [--ns 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.batched_reference import QUESTION, Reference
from bench.harness import real_model, repack, table, tiny_model, write
from bench.pipeline import Bench, TimedEngine, bench_daemon
from bot import logs
from bot.model.types import Generation, GenerationRequest

_channels = itertools.count()


def note(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


class StampedQueue(asyncio.Queue[str | None]):
    """A generation's deltas, stamped as the event loop receives them (one per token drawn)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.ended: float | None = None

    def put_nowait(self, item: str | None) -> None:
        if item is None:
            self.ended = time.perf_counter()
        else:
            self.times.append(time.perf_counter())
        super().put_nowait(item)


class StampingEngine(TimedEngine):
    """The engine whose generations note when each delta reached the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.force = {"ban_eos": True}  # every reply is max_tokens long

    def start(self, request: GenerationRequest) -> Generation:
        generation = super().start(request)
        # Deltas reach the queue on the event loop, after this returns.
        generation._deltas = StampedQueue()
        return generation

    def by_channel(self, channel: str) -> Generation:
        return next(g for g in self.generations if g.request.cache_key == f"bench:{channel}")


def stamps(generation: Generation) -> StampedQueue:
    assert isinstance(generation._deltas, StampedQueue)
    return generation._deltas


async def first_text(bench: Bench, channel: str) -> float:
    """When the channel's reply's first text reached the event loop."""
    engine = bench.engine
    assert isinstance(engine, StampingEngine)
    while not any(g.request.cache_key == f"bench:{channel}" for g in engine.generations):  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    queue = stamps(engine.by_channel(channel))
    while not queue.times and queue.ended is None:  # noqa: ASYNC110 (the stamps are timed)
        await asyncio.sleep(0.002)
    if not queue.times:
        raise RuntimeError(f"the reply in {channel} ended without text")
    return queue.times[0]


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU time a thread has used (its own, not llama.cpp's worker threads')."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def daemon_run(
    bench: Bench, n: int, tokens: int, cpu: list[tuple[float, float]]
) -> tuple[float, tuple[float, float]]:
    """Aggregate tokens/s of n channels answered at once, as the daemon received the text, and
    the first channel's time to first token. Appends to `cpu` the event loop's and the model
    thread's CPU seconds per token: the daemon's own work, whatever else runs on the machine."""
    channels = [f"p{next(_channels)}" for _ in range(n)]
    model_thread = bench.engine._thread
    loop_cpu, model_cpu = time.thread_time(), thread_cpu_s(model_thread)
    sent = time.perf_counter()
    for seq, channel in enumerate(channels):
        await bench.daemon.handle(bench.message(channel, f"u{seq}", f"({seq}) {QUESTION}"))
    await bench.daemon.wait_idle()
    loop_cpu, model_cpu = time.thread_time() - loop_cpu, thread_cpu_s(model_thread) - model_cpu
    cpu.append((loop_cpu / (n * tokens), model_cpu / (n * tokens)))
    engine = bench.engine
    assert isinstance(engine, StampingEngine)
    queues = [stamps(engine.by_channel(c)) for c in channels]
    results = [engine.by_channel(c).result for c in channels]
    assert all(r.generated_tokens == tokens for r in results), results
    start = max(q.times[0] for q in queues)  # from here on every channel generates
    end = max(q.ended or q.times[-1] for q in queues)
    after = sum(1 for q in queues for t in q.times if t > start)
    # The first channel's TTFT, and its part before the model had the request.
    ttft = (queues[0].times[0] - sent, engine.started_at[id(engine.by_channel(channels[0]))] - sent)
    return after / (end - start), ttft


async def streaming_ttft(bench: Bench, busy: int, tokens: int) -> tuple[tuple[float, float], bool]:
    """TTFT of the message of N=1's run, sent while `busy` other channels stream (and its part
    before the model had the request), and whether they all still streamed at its first text."""
    engine = bench.engine
    assert isinstance(engine, StampingEngine)
    others = [f"s{next(_channels)}" for _ in range(busy)]
    for channel in others:
        await bench.daemon.handle(bench.message(channel, "busy", f"(busy) {QUESTION}"))
    for channel in others:
        await first_text(bench, channel)
        # Well into their streams, not at their start.
        queue = stamps(engine.by_channel(channel))
        while len(queue.times) < tokens // 4 and queue.ended is None:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    probe = f"q{next(_channels)}"
    sent = time.perf_counter()
    await bench.daemon.handle(bench.message(probe, "u0", f"(0) {QUESTION}"))
    first = await first_text(bench, probe)
    overlapped = all((stamps(engine.by_channel(c)).ended or 1e18) > first for c in others)
    await bench.daemon.wait_idle()
    started = engine.started_at[id(engine.by_channel(probe))]
    return (first - sent, started - sent), overlapped


async def measure(
    model: Path, ns: list[int], tokens: int, repeats: int, threads: int
) -> dict[str, Any]:
    reference = Reference(model, max(ns), tokens, threads, repack())
    raw: dict[int, list[float]] = {n: [] for n in ns}
    ours: dict[int, list[float]] = {n: [] for n in ns}
    cpu: dict[int, list[tuple[float, float]]] = {n: [] for n in ns}
    idle: list[float] = []
    busy: list[float] = []
    idle_daemon: list[float] = []  # of those TTFTs, the part before the model had the request
    busy_daemon: list[float] = []
    overlaps = 0  # trials where the 3 others still streamed at the probe's first text
    try:
        async with bench_daemon(
            model, max_tokens=tokens, n_ctx=2048, parallel=max(4, *ns), engine_cls=StampingEngine
        ) as bench:
            for n in ns:  # warm-up: every batch shape once, both sides
                reference.run(n, min(16, tokens))
                await daemon_run(bench, n, tokens, [])
            await streaming_ttft(bench, 3, tokens)
            for _ in range(repeats):
                for n in ns:
                    raw[n].append(reference.run(n, tokens))
                    aggregate, first = await daemon_run(bench, n, tokens, cpu[n])
                    ours[n].append(aggregate)
                    if n == 1:  # the idle bot's time to first token
                        idle.append(first[0])
                        idle_daemon.append(first[1])
                    note(f"N={n}: raw {raw[n][-1]:.1f}, daemon {aggregate:.1f} tok/s")
                (ttft, before), overlapped = await streaming_ttft(bench, 3, tokens)
                busy_daemon.append(before)
                note(
                    f"TTFT idle {idle[-1]:.3f} s ({idle_daemon[-1]:.3f} before the model), "
                    f"while 3 stream {ttft:.3f} s ({before:.3f} before the model)"
                )
                busy.append(ttft)
                overlaps += overlapped
    finally:
        reference.close()
    ratio = {n: statistics.median(o / r for o, r in zip(ours[n], raw[n], strict=True)) for n in ns}
    raw_agg = {n: statistics.median(v) for n, v in raw.items()}
    our_agg = {n: statistics.median(v) for n, v in ours.items()}
    top, base = max(ns), min(ns)
    return {
        "model": str(model),
        "tokens": tokens,
        "repeats": repeats,
        "threads": threads,
        "repack": repack(),
        "raw_runs": {str(n): v for n, v in raw.items()},
        "daemon_runs": {str(n): v for n, v in ours.items()},
        "raw_aggregate_tok_s": {str(n): v for n, v in raw_agg.items()},
        "daemon_aggregate_tok_s": {str(n): v for n, v in our_agg.items()},
        "daemon_per_channel_tok_s": {str(n): v / n for n, v in our_agg.items()},
        "raw_per_channel_tok_s": {str(n): v / n for n, v in raw_agg.items()},
        "P6": {str(n): v for n, v in ratio.items()},
        # CPU ms per generated token: the event loop (the whole daemon's own work) and the
        # model thread (llama.cpp's calling thread: step loop, sampling, its share of decode).
        "loop_cpu_ms_per_token": {
            str(n): 1000 * statistics.median(c[0] for c in v) for n, v in cpu.items()
        },
        "model_thread_cpu_ms_per_token": {
            str(n): 1000 * statistics.median(c[1] for c in v) for n, v in cpu.items()
        },
        "P6_scale": (our_agg[top] / our_agg[base]) / (raw_agg[top] / raw_agg[base]),
        "ttft_idle_s": idle,
        "ttft_streaming_s": busy,
        "ttft_idle_before_model_s": idle_daemon,
        "ttft_streaming_before_model_s": busy_daemon,
        "streaming_overlapped": overlaps,
        "P3_streaming": statistics.median(b / i for b, i in zip(busy, idle, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ns", default="1,2,4", help="channels at once, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    ns = [int(n) for n in args.ns.split(",")]
    if 1 not in ns:
        parser.error("--ns must hold 1 (the idle bot's TTFT and the scale come from N=1)")
    result = asyncio.run(measure(model, ns, args.tokens, args.repeats, args.threads))
    rows = [
        [
            n,
            f"{result['raw_aggregate_tok_s'][str(n)]:.1f}",
            f"{result['daemon_aggregate_tok_s'][str(n)]:.1f}",
            f"{result['daemon_per_channel_tok_s'][str(n)]:.1f}",
            f"{result['P6'][str(n)]:.3f}",
            f"{result['loop_cpu_ms_per_token'][str(n)]:.2f}",
            f"{result['model_thread_cpu_ms_per_token'][str(n)]:.2f}",
        ]
        for n in ns
    ]
    print(f"{model.name}: {args.tokens} tokens per reply, {args.repeats} interleaved runs")
    header = ["N", "raw tok/s", "daemon tok/s", "per channel", "P6 (≥ 0.90)"]
    print(table(rows, [*header, "loop CPU ms/token", "model thread CPU ms/token"]))
    print(f"P6_scale{max(ns)}: {result['P6_scale']:.3f} (goal ≥ 0.90)")
    i, b = statistics.median(result["ttft_idle_s"]), statistics.median(result["ttft_streaming_s"])
    print(
        f"TTFT idle {i:.3f} s, while 3 stream {b:.3f} s; "
        f"P3_streaming {result['P3_streaming']:.2f} (goal ≤ 2.0); the 3 still streamed at "
        f"its first text in {result['streaming_overlapped']} of {args.repeats}"
    )
    print(f"wrote {write('batching' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
