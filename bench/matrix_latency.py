"""Matrix latency: Alice's send → the bot's first event in the room (typing notice or reply).

A real Synapse (tests/support/synapse.py, from `.venv-synapse`) on 127.0.0.1, the daemon with the
Matrix adapter and the tiny model, and Alice as a real matrix-nio client in an encrypted DM.
Per message: from just before Alice's `room_send` (encryption included) to the moment her sync
delivers the bot's first event after it; also to the first text and to the final edit.
Goal: p50 ≤ 300 ms.

    python -m bench.matrix_latency [--messages 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, percentile_rows, summary, table, tiny_model, write
from bot import logs
from bot.daemon import Daemon
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store

sys.path.insert(0, str(ROOT / "tests"))
from adapters.matrix.adapter import MatrixAdapter
from support.synapse import Peer, Seen, Synapse

PERSONA = """description = "benchmark"
temperature = 0.7
max_tokens = 24
system_prompt = "You are a benchmark."
"""


def first_after(seen: list[Seen], since: float, pick: Any) -> Seen | None:
    return next((s for s in seen if s.at >= since and pick(s)), None)


async def measure(messages: int, warmup: int) -> dict[str, object]:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = Synapse(tmp / "synapse")
        await asyncio.to_thread(server.start)
        try:
            return await _measure(server, tmp, messages, warmup)
        finally:
            await asyncio.to_thread(server.stop)


async def _measure(server: Synapse, tmp: Path, messages: int, warmup: int) -> dict[str, object]:
    bot_account = await server.register("bot")
    alice = Peer(server, await server.register("alice"), tmp / "alice")
    personas = tmp / "personas"
    personas.mkdir()
    (personas / "bench.toml").write_text(PERSONA)
    settings = load_settings(
        None,
        bot={"data_dir": tmp / "bot", "personas_dir": personas, "default_persona": "bench"},
        queue={"per_user_per_minute": 10_000},
        matrix={
            "homeserver": server.url,
            "user_id": bot_account.user_id,
            "password": bot_account.password,
            "allowed_users": [alice.user_id],
        },
    )
    engine = await LlamaCppBackend.load(tiny_model(), n_ctx=2048, n_threads=2)
    store = await Store.open(tmp / "bot" / "hearthbot.db")
    adapter = MatrixAdapter(settings.matrix, settings.bot)
    daemon = Daemon(settings, store, engine, load_personas(personas), {"matrix": adapter})  # type: ignore[dict-item]
    bot = bot_account.user_id
    first_ms, text_ms, final_ms = [], [], []
    try:
        await alice.start()
        await daemon.start()
        await asyncio.wait_for(adapter.wait_ready(), 30)
        room = await alice.create_room(invite=[bot], direct=True, encrypted=True)
        await alice.wait_for(lambda: alice.joined(room, bot))
        for i in range(warmup + messages):
            first, text, final = await one_message(alice, daemon, room, bot, i)
            if i >= warmup:
                first_ms.append(first * 1000)
                text_ms.append(text * 1000)
                final_ms.append(final * 1000)
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
        await alice.stop()
    return {
        "messages": messages,
        "room": "encrypted DM",
        "first_event_ms": summary(first_ms),
        "first_text_ms": summary(text_ms),
        "final_text_ms": summary(final_ms),
    }


def typing_off(alice: Peer, bot: str) -> bool:
    return not alice.typing or bot not in alice.typing[-1].event.users


async def one_message(
    alice: Peer, daemon: Daemon, room: str, bot: str, i: int
) -> tuple[float, float, float]:
    """Seconds from the send to the bot's first event, its first text, its final text."""
    await alice.wait_for(lambda: typing_off(alice, bot))  # start from quiet
    started = time.monotonic()
    asked = await alice.send(room, f"message {i}: how is the fire tonight?")
    first = await alice.wait_for(
        lambda: (
            first_after(alice.typing, started, lambda s: bot in s.event.users)
            or first_after(alice.seen, started, lambda s: s.event.sender == bot)
        )
    )
    reply = await alice.wait_for(lambda: alice.reply_to(bot, asked))
    await asyncio.wait_for(daemon.wait_idle(), 30)
    answer = (await daemon.store.history(f"matrix:{room}"))[-1].text
    # What shows is the stored answer, perhaps with a note after it ("reply cut at ...").
    await alice.wait_for(lambda: alice.latest_text(reply.event.event_id).startswith(answer))
    await alice.wait_for(lambda: typing_off(alice, bot))
    edits = alice.edits_of(reply.event.event_id)
    final = edits[-1].at if edits else reply.at
    return first.at - started, reply.at - started, final - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(measure(args.messages, args.warmup))
    rows = percentile_rows(
        {
            "first event (typing or reply)": result["first_event_ms"],
            "first text of the reply": result["first_text_ms"],
            "final text": result["final_text_ms"],
        },
        0,
    )
    print(f"{args.messages} messages, encrypted DM, real Synapse, tiny model (ms from send)")
    print(table(rows, ["", "p50", "p90", "max"]))
    p50 = result["first_event_ms"]["p50"]  # type: ignore[index]
    print(f"goal p50 <= 300 ms: {'met' if p50 <= 300 else 'NOT met'} ({p50:.0f} ms)")
    print(f"wrote {write('matrix_latency', result)}")


if __name__ == "__main__":
    main()
