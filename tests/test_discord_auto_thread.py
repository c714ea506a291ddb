"""`!autothread` and `/autothread` (issue #17): auto_thread per channel, kept by the core like
the trigger mode, with `[discord] auto_thread_channels` as the default. Changing it is for
admins in a server (by platform id); it survives a restart. The real daemon, DiscordAdapter
and discord.py against the fake Discord."""

from __future__ import annotations

from pathlib import Path

from bot import texts
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord, Json, until


async def slash(fake: FakeDiscord, user: Json, state: str | None) -> str:
    options = [] if state is None else [{"name": "state", "type": 3, "value": state}]
    interaction = await fake.slash(user, fake.general, "autothread", options)
    await until(lambda: bool(fake.responses(interaction)), what="/autothread answered")
    return str(fake.responses(interaction)[0]["data"]["content"])


async def test_autothread_per_channel_for_admins_and_kept(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    admin = int(fake.admin["id"])
    other = int(fake.other["id"])  # listed in the config: threads by default
    async with hearthbot(
        tmp_path, tiny_model, fake, admins=[admin], auto_thread_channels=[other]
    ) as (daemon, _adapter):
        assert await slash(fake, fake.alice, None) == texts.AUTOTHREAD_SHOW[False]
        # Not an admin: refused, by slash command and typed, and nothing changes.
        assert "Only an admin" in await slash(fake, fake.alice, "on")
        typed = await fake.say(fake.alice, fake.general, f"{at(fake)} !autothread on")
        assert "Only an admin" in await answer(fake, daemon, typed)
        plain = await fake.say(fake.alice, fake.general, f"{at(fake)} still in place?")
        assert await answer(fake, daemon, plain)
        assert fake.threads_started == []
        # An admin turns it on: a mention opens a thread and is answered there.
        assert await slash(fake, fake.admin, "on") == texts.AUTOTHREAD_SET[True]
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} plan a picnic")
        await until(lambda: bool(fake.threads_started), what="a thread opened")
        (thread,) = fake.threads_started
        assert thread["id"] == asked["id"]
        await until(lambda: bool(fake.bot_messages(thread)), 30, "the answer in the thread")
        await daemon.wait_idle()
        # The config's channel turned off by a typed command: answered in place.
        off = await fake.say(fake.admin, fake.other, f"{at(fake)} !autothread off")
        assert await answer(fake, daemon, off) == texts.AUTOTHREAD_SET[False]
        there = await fake.say(fake.alice, fake.other, f"{at(fake)} no thread please")
        assert await answer(fake, daemon, there)
        assert len(fake.threads_started) == 1
    # After a restart both choices hold.
    async with hearthbot(
        tmp_path, tiny_model, fake, admins=[admin], auto_thread_channels=[other]
    ) as (daemon, _adapter):
        assert await slash(fake, fake.alice, None) == texts.AUTOTHREAD_SHOW[True]
        there = await fake.say(fake.alice, fake.other, f"{at(fake)} still no thread?")
        assert await answer(fake, daemon, there)
        again = await fake.say(fake.bob, fake.general, f"{at(fake)} a second picnic")
        await until(lambda: len(fake.threads_started) == 2, what="a second thread")
        assert fake.threads_started[-1]["id"] == again["id"]
        await until(lambda: bool(fake.bot_messages(fake.threads_started[-1])), 30, "answered")
        await daemon.wait_idle()
        dm = fake.dm_channel(fake.bob)
        direct = await fake.say(fake.bob, dm, "!autothread on")
        assert await answer(fake, daemon, direct) == texts.AUTOTHREAD_ELSEWHERE


async def test_autothread_in_a_thread_says_where_it_is_set_and_changes_nothing(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    # In a thread a mention is answered where it is: the choice belongs to its channel.
    admin = int(fake.admin["id"])
    async with hearthbot(tmp_path, tiny_model, fake, admins=[admin]) as (daemon, _adapter):
        for text in ("!autothread", "!autothread on"):
            said = await fake.say(fake.admin, fake.thread, f"{at(fake)} {text}")
            assert await answer(fake, daemon, said) == texts.AUTOTHREAD_IN_THREAD
        assert await slash(fake, fake.alice, None) == texts.AUTOTHREAD_SHOW[False]
        asked = await fake.say(fake.alice, fake.thread, f"{at(fake)} plan a picnic")
        assert await answer(fake, daemon, asked)
        assert fake.threads_started == []
