"""`!forget` and what the bot never stored (issue #17): a reply chain's links read from the
platform when a prompt is built. After Bob's `!forget`, his messages written before it stay out
of every prompt, though Discord still has them, and out of the adapter's cache; what he writes
afterwards is quoted as usual. The real daemon, DiscordAdapter and discord.py against the fake
Discord; the same on a real Synapse is in tests/test_matrix_triggers.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from adapters.common.recent import RecentMessages
from bot.daemon import Daemon
from bot.forgotten import CLOCK_SLACK_S, hidden
from bot.prompt.builder import Prompt
from bot.store import Store
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord


async def user_turns(daemon: Daemon, channel: str) -> str:
    """What the model reads of the people's turns in `channel` now."""
    prompt = await daemon.context.build(
        channel, "sys", reserve=64, multi_user=True, through_row=10**9
    )
    assert isinstance(prompt, Prompt)
    return "\n".join(m["content"] for m in prompt.messages if m["role"] == "user")


async def test_a_forgotten_persons_messages_leave_every_reply_chain(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, adapter):
        channel = f"discord:{fake.general['id']}"
        bob = str(fake.bob["id"])
        root = await fake.say(fake.bob, fake.general, "dinner at 8?")
        middle = await fake.say(fake.admin, fake.general, "make it 9", reply_to=root, ping=False)
        asked = await fake.say(
            fake.alice, fake.general, f"{at(fake)} so when?", reply_to=middle, ping=False
        )
        await answer(fake, daemon, asked)
        assert "dinner at 8?" in await user_turns(daemon, channel)  # never stored: read back

        forget = await fake.say(fake.bob, fake.other, f"{at(fake)} !forget")
        assert "Deleted" in await answer(fake, daemon, forget)  # given in another channel
        assert "dinner at 8?" not in await user_turns(daemon, channel)
        adapter.reader.quotes.recent = RecentMessages()  # as after a restart: read by REST
        assert "dinner at 8?" not in await user_turns(daemon, channel)
        assert "make it 9" in await user_turns(daemon, channel)  # the admin's link stays
        # A new reply straight to Bob's old message quotes nothing of it.
        again = await fake.say(
            fake.alice, fake.general, f"{at(fake)} what was the plan?", reply_to=root, ping=False
        )
        await answer(fake, daemon, again)
        turns = await user_turns(daemon, channel)
        assert "what was the plan?" in turns and "dinner at 8?" not in turns
        # And the adapter's cache of what it read keeps nothing of his from before.
        cached = adapter.reader.quotes.recent
        assert str(root["id"]) in cached and cached.get(str(root["id"])) is None
        assert cached.get(str(middle["id"])) is not None
        # What Bob says after his !forget is quoted as usual.
        await asyncio.sleep(CLOCK_SLACK_S)
        later = await fake.say(fake.bob, fake.general, "fine, 9 it is")
        reply = await fake.say(
            fake.alice, fake.general, f"{at(fake)} great", reply_to=later, ping=False
        )
        await answer(fake, daemon, reply)
        assert "fine, 9 it is" in await user_turns(daemon, channel)
        assert cached.get(str(later["id"])) is not None
        assert cached.get(str(later["id"])).author_id == bob  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("before", "sent_at", "expected"),
    [
        (None, 50.0, False),  # never forgot
        (None, None, False),
        (100.0, 50.0, True),  # written before the forget
        (100.0, 150.0, False),  # written after it
        (100.0, None, True),  # when is not known: kept out
    ],
)
def test_hidden(before: float | None, sent_at: float | None, expected: bool) -> None:
    assert hidden(before, sent_at) is expected


async def test_the_record_holds_no_text_moves_forward_and_outlives_purges(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "hearthbot.db")
    try:
        assert await store.forgotten_before("discord:42") is None
        await store.forget_user("discord:42")
        first = await store.forgotten_before("discord:42")
        assert first is not None and abs(first - time.time() - CLOCK_SLACK_S) < 5
        await store.purge(time.time() + 10)
        await store.reset_channel("discord:1")
        assert await store.forgotten_before("discord:42") == first
        await asyncio.sleep(0.01)
        await store.forget_user("discord:42")
        second = await store.forgotten_before("discord:42")
        assert second is not None and second > first
        assert await store.forgotten_before("matrix:42") is None  # another platform's 42
        columns = await store.read("SELECT name FROM pragma_table_info('forgotten')")
        assert sorted(str(c[0]) for c in columns) == ["before", "user_key"]
    finally:
        await store.close()
