"""P3: a channel with one message while another has 20 queued (short replies).

Channel A queues 20 messages; then channel B sends one. B's wait is the time from its
message to the model starting on it; round-robin serving means B waits for at most the A
reply in progress. P3 = B's wait ÷ one reply's time (median of A's). Goal: ≤ 1.

    python -m bench.fairness [--model FILE | --tiny] [--queued 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import real_model, table, tiny_model, write
from bench.pipeline import bench_daemon
from bot import logs


async def once(model: Path, queued: int) -> tuple[float, float, int]:
    async with bench_daemon(model, max_tokens=16) as bench:
        daemon, engine = bench.daemon, bench.engine
        flood = [bench.message("busy", "a", f"question {i} about the sea") for i in range(queued)]
        for message in flood:
            await daemon.handle(message)
        # B arrives while the busy channel's first reply is streaming (as in real life: at
        # some point during a reply, not in the same instant the model starts one).
        while not engine.generations or engine.generations[0].result.first_token_s is None:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        lonely = bench.message("quiet", "b", "a single question about the moon")
        sent = time.perf_counter()
        await daemon.handle(lonely)
        await bench.adapter.replies[lonely.message_id].done.wait()
        started = next(
            engine.started_at[id(g)]
            for g in engine.generations
            if g.request.cache_key == "bench:quiet"
        )
        # Busy replies the model started after B arrived and before B: fair queuing allows
        # none (the one in progress when B arrived started before it).
        served_before = sum(
            1 for g in engine.generations if sent < engine.started_at[id(g)] < started
        )
        await daemon.wait_idle()
        # One reply's time as the pipeline sees it: from one busy reply's start to the next
        # (the model's time plus the daemon's work around it), skipping the gap B took.
        busy = sorted(
            engine.started_at[id(g)]
            for g in engine.generations
            if g.request.cache_key == "bench:busy"
        )
        periods = [b - a for a, b in itertools.pairwise(busy) if not a < started < b]
        return started - sent, statistics.median(periods), served_before


async def measure(model: Path, queued: int, repeats: int) -> dict[str, Any]:
    runs = [await once(model, queued) for _ in range(repeats)]
    ratios = [wait / reply for wait, reply, _ in runs]
    return {
        "model": str(model),
        "queued": queued,
        "runs": [{"wait_s": w, "reply_s": r, "served_before": n} for w, r, n in runs],
        "P3": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    result = asyncio.run(measure(model, args.queued, args.repeats))
    rows = [
        [f"{r['wait_s']:.3f}", f"{r['reply_s']:.3f}", r["served_before"]] for r in result["runs"]
    ]
    print(f"{model.name}: 1 message vs {args.queued} queued in another channel")
    print(table(rows, ["wait s", "one reply s", "A replies started while B waited"]))
    print(f"P3 = wait ÷ one reply: {result['P3']:.2f} (goal ≤ 1)")
    print(f"wrote {write('fairness' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
