"""P5: memory stays bounded.

Tiny model: 1,000 messages over 50 channels; RSS must not grow over the second half (no
leak). Real model: 200 short messages (max_tokens 16) over 20 channels; peak RSS must stay
within model file + the KV pool (n_ctx × `parallel` cells, the engine's default of 4) +
kv_cache_mb + 200 MB. P5_excess_mb = peak RSS − (model + KV pool + kv_cache_mb).

    python -m bench.memory [--model FILE | --tiny] [--messages N] [--channels N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import resource
from pathlib import Path
from typing import Any

from bench.harness import real_model, table, tiny_model, write
from bench.pipeline import bench_daemon
from bot import logs
from bot.model.gguf import inspect_model

MB = 2**20

PARALLEL = 4  # slots, as `[model] parallel` defaults; the pool is n_ctx × this


def rss_mb() -> float:
    # Return freed heap to the OS first: what stays resident after that is really in use.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(
    model: Path, messages: int, channels: int, n_ctx: int, kv_cache_mb: int
) -> dict[str, Any]:
    samples: list[tuple[int, float, float]] = []  # messages, RSS, of which saved KV state
    async with bench_daemon(
        model, max_tokens=16, n_ctx=n_ctx, kv_cache_mb=kv_cache_mb, parallel=PARALLEL
    ) as b:
        samples.append((0, rss_mb(), 0.0))
        for i in range(messages):
            msg = b.message(f"c{i % channels}", f"u{i % 13}", f"message {i}: tell me a fact")
            await b.daemon.handle(msg)
            await b.adapter.replies.pop(msg.message_id).done.wait()
            b.engine.generations.clear()  # the bench's own records must not count as a leak
            b.engine.started_at.clear()
            if (i + 1) % max(1, messages // 20) == 0:
                samples.append((i + 1, rss_mb(), b.engine._cache.total_bytes / MB))
    summary = inspect_model(model)
    budget_mb = (summary.size_bytes + summary.kv_bytes(n_ctx * PARALLEL)) / MB + kv_cache_mb
    # Saved KV state grows until kv_cache_mb by design; a leak is growth beyond it.
    half = [rss - cache for n, rss, cache in samples if n >= messages // 2]
    peak = max(rss for _, rss, _ in samples)
    return {
        "model": str(model),
        "messages": messages,
        "channels": channels,
        "samples": samples,
        "peak_rss_mb": peak,
        "second_half_growth_mb": half[-1] - half[0],
        "model_kv_cache_budget_mb": budget_mb,
        "P5_excess_mb": peak - budget_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="the leak check on the tiny model")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--kv-cache-mb", type=int, default=256)
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    messages = args.messages or (1000 if args.tiny else 200)
    channels = args.channels or (50 if args.tiny else 20)
    result = asyncio.run(measure(model, messages, channels, args.n_ctx, args.kv_cache_mb))
    print(f"{model.name}: {messages} messages over {channels} channels")
    rows = [[n, f"{rss:.0f}", f"{cache:.1f}"] for n, rss, cache in result["samples"]]
    print(table(rows, ["messages", "RSS MB", "saved KV MB"]))
    print(
        f"peak {result['peak_rss_mb']:.0f} MB; model + KV + kv_cache_mb = "
        f"{result['model_kv_cache_budget_mb']:.0f} MB; excess {result['P5_excess_mb']:.0f} MB "
        f"(goal ≤ 200); second-half growth beyond saved KV {result['second_half_growth_mb']:.1f} MB"
    )
    print(f"wrote {write('memory' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
