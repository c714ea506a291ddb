"""Discord latency: a MESSAGE_CREATE from the gateway → the bot's first REST call for it.

The fake Discord (tests/support/fake_discord.py) on 127.0.0.1, the real discord.py client inside the
real adapter, the daemon with the tiny model and SQLite. Per message: from just before the
fake sends the MESSAGE_CREATE frame to the first REST request it receives for that channel
(the typing indicator, or the reply itself). Goal: p50 ≤ 50 ms.

With `--edit-replies N` it also streams N replies of 300 tokens from the real bench model at
the default edit interval and counts the edits of each. Goal: at most
ceil(generation seconds / interval) + 1.

    python -m bench.discord_latency [--messages 50] [--edit-replies 3 [--model FILE]]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
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
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store

sys.path.insert(0, str(ROOT / "tests"))
from adapters.discord.adapter import DiscordAdapter
from support.fake_discord import Call, FakeDiscord, connected, discord_section, until

PERSONA = """description = "benchmark"
temperature = 0.7
max_tokens = {max_tokens}
system_prompt = "You are a benchmark."
"""
DEFAULT_INTERVAL = 1.2


async def with_bot(
    tmp: Path, model: Path, max_tokens: int, edit_interval_s: float, run: Any
) -> dict[str, Any]:
    personas = tmp / "personas"
    personas.mkdir(parents=True, exist_ok=True)
    (personas / "bench.toml").write_text(PERSONA.format(max_tokens=max_tokens))
    fake = FakeDiscord()
    await fake.start()
    settings = load_settings(
        None,
        bot={"data_dir": tmp, "personas_dir": personas, "default_persona": "bench"},
        queue={"max_pending": 1000, "per_user_per_minute": 10_000},
        discord=discord_section(fake, edit_interval_s=edit_interval_s),
    )
    engine = await RecordingEngine.load(model, n_ctx=2048, n_threads=2, repack=repack())
    store = await Store.open(tmp / "hearthbot.db")
    adapter = DiscordAdapter(settings.discord, settings.bot, guild_ready_timeout=0.05)
    daemon = Daemon(settings, store, engine, load_personas(personas), {"discord": adapter})
    try:
        await daemon.start()
        await connected(adapter, fake)
        return await run(fake, daemon, engine)
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
        await fake.close()


def first_call(fake: FakeDiscord, path: str, skip: int) -> Call | None:
    return next((c for c in fake.calls[skip:] if c.path.startswith(path)), None)


async def latencies(fake: FakeDiscord, daemon: Daemon, messages: int, warmup: int) -> list[float]:
    channels = [fake.general, fake.other, fake.thread]
    users = [fake.alice, fake.bob, fake.admin]
    measured: list[float] = []
    for i in range(warmup + messages):
        channel = channels[i % len(channels)]
        path = f"/channels/{channel['id']}/"
        seen = len(fake.calls)
        started = time.monotonic()
        await fake.say(users[i % len(users)], channel, f"{fake.mention(fake.bot)} question {i}")
        await until(lambda p=path, n=seen: first_call(fake, p, n) is not None, what="a call")
        first = first_call(fake, path, seen)
        assert first is not None
        await daemon.wait_idle()
        if i >= warmup:
            measured.append((first.at - started) * 1000)
    return measured


async def edits_per_reply(
    fake: FakeDiscord, daemon: Daemon, engine: RecordingEngine, replies: int
) -> list[dict[str, float]]:
    engine.force = {"ban_eos": True}  # every reply is the full 300 tokens
    rows = []
    for i in range(replies):
        asked = await fake.say(fake.alice, fake.general, f"{fake.mention(fake.bot)} story {i}")
        await until(lambda m=asked: bool(fake.replies_to(m)), timeout=120, what="the reply")
        await daemon.wait_idle()
        (reply,) = fake.replies_to(asked)
        edits = len(fake.calls_to("PATCH", f"/channels/\\d+/messages/{reply['id']}"))
        seconds = engine.generations[-1].result.total_s
        rows.append(
            {
                "generation_s": seconds,
                "tokens": engine.generations[-1].result.generated_tokens,
                "edits": edits,
                "allowed": math.ceil(seconds / DEFAULT_INTERVAL) + 1,
            }
        )
    return rows


async def measure(
    messages: int, warmup: int, edit_replies: int, model: Path | None
) -> dict[str, Any]:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        measured = await with_bot(
            Path(tmp) / "latency",
            tiny_model(),
            8,
            DEFAULT_INTERVAL,
            lambda fake, daemon, _engine: latencies(fake, daemon, messages, warmup),
        )
        result: dict[str, Any] = {"messages": messages, "first_call_ms": summary(measured)}
        if edit_replies:
            result["edits"] = await with_bot(
                Path(tmp) / "edits",
                model or real_model(),
                300,
                DEFAULT_INTERVAL,
                lambda fake, daemon, engine: edits_per_reply(fake, daemon, engine, edit_replies),
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--edit-replies", type=int, default=0)
    parser.add_argument("--model", type=Path, help="real GGUF for --edit-replies")
    args = parser.parse_args()
    result = asyncio.run(measure(args.messages, args.warmup, args.edit_replies, args.model))
    s = result["first_call_ms"]
    print(f"{args.messages} mentions, tiny model: MESSAGE_CREATE → first REST call (ms)")
    print(table([[f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['max']:.1f}"]], ["p50", "p90", "max"]))
    print(f"goal p50 <= 50 ms: {'met' if s['p50'] <= 50 else 'NOT met'} ({s['p50']:.1f} ms)")
    if "edits" in result:
        rows = [
            [f"{r['generation_s']:.1f}", r["tokens"], r["edits"], r["allowed"]]
            for r in result["edits"]
        ]
        print(f"edits per 300-token reply at {DEFAULT_INTERVAL} s, real model")
        print(table(rows, ["generation s", "tokens", "edits", "at most"]))
        met = all(r["edits"] <= r["allowed"] for r in result["edits"])
        print(f"goal edits <= ceil(s / interval) + 1: {'met' if met else 'NOT met'}")
    print(f"wrote {write('discord-latency', result)}")


if __name__ == "__main__":
    main()
