"""Big text attachments through real discord.py, the fake Discord and the real daemon: a
flood of them is read only up to the cap, refused before any work when too long to fit, and
counted off the event loop; memory stays bounded and the loop stays responsive."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.discord.interactions import REMEMBERED_REPLIES_BYTES
from bot import texts
from bot.incoming_text import max_message_chars
from bot.prompt.builder import COUNTS_MAX_BYTES
from support.discord_bot import at, hearthbot
from support.fake_discord import FakeDiscord, until
from support.measure import LoopLag, earlier_objects_frozen, rss_mb

# About a minute of reading and tokenizing.
pytestmark = pytest.mark.slow

N_CTX = 2048
MESSAGES = 100
# Words, so that tokenizing costs what prose costs (a run of one letter is cheap).
WORDS = b"the quick brown fox jumps over a lazy dog while seven wizards quietly hex it "
KB_256 = (WORDS * (256 * 1024 // len(WORDS) + 1))[: 256 * 1024]
# Under the cap for N_CTX (8 characters a token), far over its tokens: read, counted, refused.
READABLE = WORDS * (max_message_chars(N_CTX) // len(WORDS) - 2)


async def test_a_flood_of_big_attachments_stays_bounded_and_the_loop_responsive(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    queue = {"max_pending": 8, "per_user_per_minute": 10_000}
    with earlier_objects_frozen():
        await flood(tmp_path, tiny_model, fake, queue)


async def flood(tmp_path: Path, tiny_model: Path, fake: FakeDiscord, queue: dict[str, int]) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, n_ctx=N_CTX, queue=queue) as (daemon, adapter):
        ten = [fake.attachment(f"part{i}.txt", KB_256, "text/plain") for i in range(10)]
        readable = fake.attachment("notes.txt", READABLE, "text/plain")
        counts, replies = daemon.context.counts, adapter.interactions.replies
        before = rss_mb()
        async with LoopLag() as lag:
            for i in range(MESSAGES):
                # Half: ten 256 KB files (2.5 MB); half: one file short enough to be read.
                files = ten if i % 2 == 0 else [readable]
                asked = await fake.say(
                    fake.alice, fake.general, f"{at(fake)} {i}", attachments=files
                )
                await until(lambda a=asked: bool(fake.replies_to(a)), 60, f"a reply to {i}")
                (reply,) = fake.replies_to(asked)
                assert "too long for my context" in reply["content"], reply["content"]
                assert counts.bytes <= COUNTS_MAX_BYTES
                assert replies.bytes <= REMEMBERED_REPLIES_BYTES
            await daemon.wait_idle()
        grown = rss_mb() - before
        unread = texts.TOO_LONG_TO_READ.split("{chars:,}")[1].split("{limit:,}")[0]
        shown = [m["content"] for m in fake.bot_messages(fake.general)]
        assert sum(unread in content for content in shown) == MESSAGES // 2
        # The readable half was tokenized and is remembered, within the bound.
        assert len(counts) >= MESSAGES // 2 and counts.bytes <= COUNTS_MAX_BYTES
        assert grown <= 150, f"RSS grew by {grown:.0f} MB"
        assert lag.ticks > 100 and lag.worst <= 0.1, f"the event loop was held {lag.worst:.3f} s"
