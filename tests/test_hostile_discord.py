"""The hostile-input corpus through the real discord.py client, the fake Discord and the real
daemon: no crash, an answer or a clear refusal for each, nobody pinged, and the bot still
answers a normal message afterwards. (The `fake` fixture checks allowed_mentions on every call
the bot made.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from support.discord_bot import at, hearthbot
from support.fake_discord import FakeDiscord, Json, until
from support.hostile import hostile_cases

# Discord delivers at most 4,000 characters as content; longer pastes arrive as message.txt.
CONTENT_LIMIT = 4000


def responded(fake: FakeDiscord, asked: Json) -> bool:
    reacted = fake.calls_to("PUT", rf"/channels/\d+/messages/{asked['id']}/reactions/.+")
    return bool(fake.replies_to(asked) or reacted)


async def test_every_case_through_discord(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    cases = hostile_cases()
    # No rate limit here, so every case reaches the model (the limit and its ⏳ refusal are
    # tested elsewhere); Alice is no admin, so the persona change in the corpus is refused.
    async with hearthbot(tmp_path, tiny_model, fake, chatty_tokens=12) as (daemon, adapter):
        daemon.queue.per_user_per_minute = 10_000
        handled = 0
        for case_id, text in cases:
            if len(text) > CONTENT_LIMIT:
                paste = fake.attachment("message.txt", text.encode(), "text/plain; charset=utf-8")
                asked = await fake.say(fake.alice, fake.general, at(fake), attachments=[paste])
            else:
                asked = await fake.say(fake.alice, fake.general, f"{at(fake)} {text}")
            # Each case ends in a reply (an answer, a command's answer, a clear refusal) or a
            # reaction (busy): the bot never goes silent and never crashes.
            await until(lambda a=asked: responded(fake, a), 60, f"a response to {case_id}")
            await asyncio.wait_for(daemon.wait_idle(), 60)
            assert not adapter.errors, (case_id, list(adapter.errors))
            handled += 1
        assert handled == len(cases) >= 50
        # Everything the bot posted was accepted by the fake (it rejects what Discord rejects:
        # empty or over-long content, bad allowed_mentions), and none of it was empty.
        posted = [
            c
            for c in fake.calls
            if c.method in ("POST", "PATCH") and isinstance(c.body, dict) and "content" in c.body
        ]
        assert posted and all(c.body["content"].strip() for c in posted)
        assert all(len(c.body["content"]) <= 2000 for c in posted)
        # The daemon still answers a normal message.
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} hello, still there?")
        await until(lambda: bool(fake.replies_to(asked)), 60, "the answer to a normal message")
