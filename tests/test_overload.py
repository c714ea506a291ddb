"""Overload: 500 messages in 10 s from 50 users over 10 channels, through the real daemon."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import Counter
from pathlib import Path

from persona_files import only_persona

from bot.events import Outcome
from recording_adapter import message
from test_daemon import daemon_for


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_flood_is_bounded_and_answered_exactly_once(tmp_path: Path, tiny_model: Path) -> None:
    # Short replies: the queue is what is tested.
    short = only_persona(tmp_path, "short", max_tokens=24, temperature=0.7)
    async with daemon_for(tmp_path, tiny_model, bot=short) as (daemon, adapter):
        before = rss_mb()
        outcomes: Counter[Outcome] = Counter()
        accepted = []
        began = time.monotonic()
        for i in range(500):
            msg = message(
                f"flood {i} from user {i % 50}", channel=f"c{i % 10}", author=f"u{i % 50}"
            )
            outcome = await daemon.handle(msg)
            outcomes[outcome] += 1
            if outcome is Outcome.ACCEPTED:
                accepted.append(msg)
            await asyncio.sleep(0.02)  # 500 messages over ~10 s
        minutes = math.ceil((time.monotonic() - began) / 60)  # ~10 s, unless the box is busy
        await asyncio.wait_for(daemon.wait_idle(), 120)
        grown = rss_mb() - before

        assert outcomes[Outcome.ACCEPTED] + outcomes[Outcome.REFUSED] == 500
        assert outcomes[Outcome.REFUSED] > 0  # 6 per user per minute: the flood is refused
        # At most one notice per user per minute, however much they sent.
        noticed = Counter(m.author_id for m, _ in adapter.refusals)
        assert noticed and max(noticed.values()) <= minutes
        # Every accepted message got exactly one answer (the adapter asserts "answered twice").
        for msg in accepted:
            (record,) = adapter.for_message(msg.message_id)
            assert record.final is not None
        # Nothing accepted is lost: SQLite holds each question and one answer for it.
        await daemon.store.close()
        with sqlite3.connect(tmp_path / "hearthbot.db") as db:
            users = {
                r[0]
                for r in db.execute("SELECT platform_message_id FROM messages WHERE role='user'")
            }
            answers = db.execute("SELECT count(*) FROM messages WHERE role='assistant'").fetchone()[
                0
            ]
            pending = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        daemon.store = await type(daemon.store).open(tmp_path / "hearthbot.db")
        assert users == {m.message_id for m in accepted}
        assert answers == len(accepted) and pending == 0
        assert grown < 150, f"RSS grew {grown:.0f} MB"
