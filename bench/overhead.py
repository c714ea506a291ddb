"""Daemon overhead per message with the model's own time excluded.

200 messages over 20 channels through the daemon (admission, SQLite, context building,
streaming, saving) with the tiny model; per message: time from `handle()` to the final reply,
minus the time the model worker spent on that generation. Goal: p50 ≤ 2 ms.

    python -m bench.overhead [--messages 200] [--channels 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness import percentile_rows, summary, table, tiny_model, write
from bench.pipeline import bench_daemon
from bot import logs


async def measure(messages: int, channels: int) -> dict[str, object]:
    logs.configure("warning")
    overheads, totals, model = [], [], []
    async with bench_daemon(tiny_model(), max_tokens=8, n_ctx=2048) as bench:
        for i in range(messages):
            msg = bench.message(
                f"c{i % channels}", f"u{i % 7}", f"message {i}: how is the weather tonight?"
            )
            started = time.perf_counter()
            await bench.daemon.handle(msg)
            await bench.adapter.replies[msg.message_id].done.wait()
            total = time.perf_counter() - started
            model_s = bench.engine.generations[-1].result.total_s
            totals.append(total * 1000)
            model.append(model_s * 1000)
            overheads.append((total - model_s) * 1000)
    return {
        "messages": messages,
        "channels": channels,
        "overhead_ms": summary(overheads),
        "total_ms": summary(totals),
        "model_ms": summary(model),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--channels", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(measure(args.messages, args.channels))
    rows = percentile_rows(
        {
            "daemon overhead": result["overhead_ms"],
            "model (excluded)": result["model_ms"],
            "end to end": result["total_ms"],
        },
        2,
    )
    print(f"{args.messages} messages over {args.channels} channels, tiny model (ms)")
    print(table(rows, ["", "p50", "p90", "max"]))
    p50 = result["overhead_ms"]["p50"]  # type: ignore[index]
    print(f"goal p50 <= 2 ms: {'met' if p50 <= 2 else 'NOT met'} ({p50:.2f} ms)")
    print(f"wrote {write('overhead', result)}")


if __name__ == "__main__":
    main()
