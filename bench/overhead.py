"""Daemon overhead per message with the model's own time excluded.

200 messages over 20 channels through the daemon (admission, SQLite, context building,
streaming, saving) with the tiny model; per message: time from `handle()` to the final reply,
minus the time the model worker spent on that generation. Goal: p50 ≤ 2 ms.

    python -m bench.overhead [--messages 200] [--channels 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.harness import RecordingEngine, summary, table, tiny_model, write
from bot import logs
from bot.daemon import Daemon
from bot.events import Capabilities, Incoming
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store

PERSONA = """description = "benchmark"
temperature = 0.7
max_tokens = 8
system_prompt = "You are a benchmark."
"""


class Reply:
    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def typing(self) -> None:
        pass

    async def update(self, text: str) -> None:
        pass

    async def finish(self, text: str) -> None:
        self.done.set()

    async def fail(self, notice: str) -> None:
        self.done.set()


class BenchAdapter:
    name = "bench"
    capabilities = Capabilities(can_edit=True, max_message_length=2000)

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}

    async def start(self, sink: object) -> None:
        pass

    async def stop(self) -> None:
        pass

    def is_connected(self) -> bool:
        return True

    def open_reply(self, message: Incoming) -> Reply:
        return self.replies.setdefault(message.message_id, Reply())

    async def refuse(self, message: Incoming, notice: str) -> None:
        raise AssertionError(f"refused: {notice}")


async def measure(messages: int, channels: int) -> dict[str, object]:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        personas_dir = Path(tmp) / "personas"
        personas_dir.mkdir()
        (personas_dir / "bench.toml").write_text(PERSONA)
        settings = load_settings(
            None,
            bot={"data_dir": tmp, "personas_dir": personas_dir, "default_persona": "bench"},
            queue={"max_pending": 1000, "per_user_per_minute": 10_000},
        )
        engine = await RecordingEngine.load(tiny_model(), n_ctx=2048, n_threads=2)
        store = await Store.open(Path(tmp) / "hearthbot.db")
        adapter = BenchAdapter()
        daemon = Daemon(settings, store, engine, load_personas(personas_dir), {"bench": adapter})  # type: ignore[dict-item]
        await daemon.start()
        overheads, totals, model = [], [], []
        for i in range(messages):
            msg = Incoming(
                platform="bench",
                channel_id=f"c{i % channels}",
                message_id=f"m{i}",
                author_id=f"u{i % 7}",
                author_name=f"user{i % 7}",
                text=f"message {i}: how is the weather at the fire tonight?",
            )
            started = time.perf_counter()
            await daemon.handle(msg)
            await adapter.replies[msg.message_id].done.wait()
            total = time.perf_counter() - started
            model_s = engine.generations[-1].result.total_s
            totals.append(total * 1000)
            model.append(model_s * 1000)
            overheads.append((total - model_s) * 1000)
        await daemon.stop()
        await store.close()
        await engine.close()
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
    rows = [
        [name, f"{s['p50']:.2f}", f"{s['p90']:.2f}", f"{s['max']:.2f}"]
        for name, s in (
            ("daemon overhead", result["overhead_ms"]),
            ("model (excluded)", result["model_ms"]),
            ("end to end", result["total_ms"]),
        )
    ]
    print(f"{args.messages} messages over {args.channels} channels, tiny model (ms)")
    print(table(rows, ["", "p50", "p90", "max"]))
    p50 = result["overhead_ms"]["p50"]  # type: ignore[index]
    print(f"goal p50 <= 2 ms: {'met' if p50 <= 2 else 'NOT met'} ({p50:.2f} ms)")
    print(f"wrote {write('overhead', result)}")


if __name__ == "__main__":
    main()
