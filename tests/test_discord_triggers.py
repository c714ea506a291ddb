"""Conversations on Discord (issue #17): the real daemon, DiscordAdapter and discord.py
against the fake Discord. Trigger modes: the adapter passes people's messages on flagged as
addressed or not, and the channel's mode (set by `/trigger` or `!trigger`) decides. Reply
chains: read from Discord when the prompt is built, never stored."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from adapters.common.recent import RecentMessages
from bot.prompt.builder import Prompt
from support.daemons import DB, model_held
from support.discord_bot import answer, at, hearthbot, quiet, texts_in, until_true
from support.fake_discord import FakeDiscord, until
from support.stored import message_count, pending_count


async def set_trigger(fake: FakeDiscord, mode: str) -> None:
    interaction = await fake.slash(
        fake.admin, fake.general, "trigger", [{"name": "mode", "type": 3, "value": mode}]
    )
    await until(lambda: bool(fake.responses(interaction)), what="/trigger answered")
    assert "From now on" in fake.responses(interaction)[0]["data"]["content"]


async def test_free_chat_channel_answers_everyone_and_a_burst_once(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    admin = int(fake.admin["id"])
    async with hearthbot(tmp_path, tiny_model, fake, admins=[admin]) as (daemon, _adapter):
        general = f"discord:{fake.general['id']}"
        chatter = await fake.say(fake.alice, fake.general, "not for the bot yet")
        await quiet(fake, daemon, chatter)
        assert message_count(tmp_path / DB) == 0  # mention mode keeps nothing of it
        denied = await fake.slash(
            fake.alice, fake.general, "trigger", [{"name": "mode", "type": 3, "value": "all"}]
        )
        await until(lambda: bool(fake.responses(denied)), what="/trigger refused")
        assert "Only an admin" in fake.responses(denied)[0]["data"]["content"]
        await set_trigger(fake, "all")
        hello = await fake.say(fake.bob, fake.general, "hello everyone")
        assert await answer(fake, daemon, hello)
        # A burst while the channel's answer is still queued: one answer for all of it.
        async with model_held(daemon.backend):
            first = await fake.say(fake.alice, fake.general, "first")
            await until(lambda: daemon.status().answering == 1, what="the first answer started")
            burst = [
                await fake.say(who, fake.general, f"burst {i}")
                for i, who in enumerate([fake.alice, fake.bob, fake.alice])
            ]
            await until(lambda: pending_count(tmp_path / DB) == 4, what="the burst stored")
            assert daemon.status().queued == 1
        await until(lambda: bool(fake.replies_to(burst[-1])), 30, "the burst's answer")
        await daemon.wait_idle()
        assert fake.replies_to(first)
        assert [fake.replies_to(m) for m in burst[:-1]] == [[], []]
        assert pending_count(tmp_path / DB) == 0
        assert await texts_in(daemon, general) == [
            "hello everyone",
            "first",
            "burst 0",
            "burst 1",
            "burst 2",
        ]
        # Edits of messages that were not addressed follow too.
        await fake.user_edit(burst[0], "burst zero")
        await until(lambda: "burst zero" in texts_in_db(tmp_path), what="the edit applied")
        # Another channel keeps the default: talk not said to the bot is not for it, so its
        # files are not even downloaded.
        paste = fake.attachment("message.txt", b"a long paste\n", "text/plain")
        elsewhere = await fake.say(fake.alice, fake.other, "anyone?", attachments=[paste])
        await quiet(fake, daemon, elsewhere)
        assert fake.downloaded == []
        # In the free-chat channel every message is for the bot: its text files are read.
        shared = await fake.say(fake.bob, fake.general, "see this", attachments=[paste])
        assert await answer(fake, daemon, shared)
        last = (await texts_in(daemon, general))[-1]
        assert last.startswith("see this") and last.endswith("a long paste")
        assert "not read" not in last and fake.downloaded == ["message.txt"]
        read = await fake.say(fake.bob, fake.general, f"{at(fake)} read it", attachments=[paste])
        assert await answer(fake, daemon, read)
        assert (await texts_in(daemon, general))[-1].endswith("a long paste")


def texts_in_db(tmp_path: Path) -> str:
    with closing(sqlite3.connect(tmp_path / DB)) as conn:
        return " ".join(r[0] for r in conn.execute("SELECT text FROM messages"))


async def test_name_mode_with_keywords_and_off_mode(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    admin = int(fake.admin["id"])
    keywords = {"keywords": ["oracle"]}
    async with hearthbot(tmp_path, tiny_model, fake, admins=[admin], bot=keywords) as (
        daemon,
        _adapter,
    ):
        await set_trigger(fake, "name")
        by_name = await fake.say(fake.alice, fake.general, "hearthbot, what time is it?")
        assert await answer(fake, daemon, by_name)
        by_keyword = await fake.say(fake.bob, fake.general, "ask the Oracle")
        assert await answer(fake, daemon, by_keyword)
        not_a_word = await fake.say(fake.bob, fake.general, "hearthbots everywhere")
        await quiet(fake, daemon, not_a_word)
        await set_trigger(fake, "off")
        spoken_to = await fake.say(fake.alice, fake.general, f"{at(fake)} still there?")
        await quiet(fake, daemon, spoken_to)
        command = await fake.say(fake.alice, fake.general, f"{at(fake)} !trigger")
        assert "commands only" in await answer(fake, daemon, command)
        dm = fake.dm_channel(fake.bob)
        direct = await fake.say(fake.bob, dm, "a DM is always answered")
        assert await answer(fake, daemon, direct)


async def test_a_reply_chain_never_stored_is_read_from_discord(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, adapter):
        channel = f"discord:{fake.general['id']}"
        root = await fake.say(fake.bob, fake.general, "dinner at 8?")
        middle = await fake.say(fake.admin, fake.general, "make it 9", reply_to=root, ping=False)
        asked = await fake.say(
            fake.alice, fake.general, f"{at(fake)} so when?", reply_to=middle, ping=False
        )
        await answer(fake, daemon, asked)
        assert await texts_in(daemon, channel) == ["so when?"]  # the chain is not stored

        async def prompt_of_the_reply() -> str:
            prompt = await daemon.context.build(
                channel, "sys", reserve=64, multi_user=True, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            (text,) = [m["content"] for m in prompt.messages if m["role"] == "user"]
            return text

        admin_name = fake.admin.get("global_name") or fake.admin["username"]
        bob_name = fake.bob.get("global_name") or fake.bob["username"]
        expected = (
            f"Alice: (earlier in the reply chain, {bob_name}:)\n> dinner at 8?\n\n"
            f"(replying to {admin_name}:)\n> make it 9\n\nso when?"
        )
        assert await prompt_of_the_reply() == expected
        adapter.reader.quotes.recent = RecentMessages()  # as after a restart: read by REST
        assert await prompt_of_the_reply() == expected
        await fake.user_delete(root)  # deleted on Discord: gone from the next prompt
        gone = f"Alice: (replying to {admin_name}:)\n> make it 9\n\nso when?"
        await until_true(prompt_of_the_reply, gone)


async def test_auto_thread_opens_a_thread_and_continues_there_without_mentions(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    general = int(fake.general["id"])
    async with hearthbot(tmp_path, tiny_model, fake, auto_thread_channels=[general]) as (
        daemon,
        _adapter,
    ):
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} plan a picnic with me")
        await until(lambda: bool(fake.threads_started), what="a thread opened")
        (thread,) = fake.threads_started
        assert thread["id"] == asked["id"] and thread["name"] == "plan a picnic with me"
        await until(lambda: bool(fake.bot_messages(thread)), 30, "the answer in the thread")
        await daemon.wait_idle()
        assert fake.bot_messages(fake.general) == []  # nothing in the channel itself
        # In the bot's thread no mention is needed; it is its own conversation.
        follow = await fake.say(fake.bob, thread, "bring lemonade?")
        await until(lambda: len(fake.bot_messages(thread)) >= 2, 30, "the second answer")
        await daemon.wait_idle()
        assert await texts_in(daemon, f"discord:{thread['id']}") == [
            "plan a picnic with me",
            "bring lemonade?",
        ]
        assert await texts_in(daemon, f"discord:{general}") == []
        assert fake.replies_to(follow)  # a reply to the follow-up, in the thread
        # A command is answered in place.
        command = await fake.say(fake.alice, fake.general, f"{at(fake)} !trigger")
        assert "when mentioned" in await answer(fake, daemon, command)
        # Elsewhere nothing changes: a mention is answered in place, chatter is not.
        other = await fake.say(fake.alice, fake.other, f"{at(fake)} no thread here")
        assert await answer(fake, daemon, other)
        assert len(fake.threads_started) == 1
        chatter = await fake.say(fake.alice, fake.thread, "a thread someone else opened")
        await quiet(fake, daemon, chatter)
