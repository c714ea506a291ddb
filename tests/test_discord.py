"""hearthbot on Discord end to end: the real daemon (tiny GGUF through llama.cpp, SQLite),
the real DiscordAdapter and discord.py, against the fake Discord in tests/support/fake_discord.py.
Nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import adapters.discord.interactions as discord_interactions
from adapters.common.recent import RecentMessages
from bot.app.cli import main
from bot.events import Outcome, StopRequested
from bot.prompt.builder import Prompt
from bot.texts import COMMAND_NOT_ALLOWED
from support.daemons import DB, model_held
from support.discord_bot import (
    MESSAGES,
    ONE_MESSAGE,
    TYPING,
    answer,
    at,
    first_text,
    hearthbot,
    nothing_happens,
    texts_in,
)
from support.fake_discord import (
    FakeDiscord,
    Json,
    RecordingSink,
    ThreadedFake,
    discord_section,
    make_adapter,
    until,
)
from support.stored import message_count


async def eventually(
    read: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 10, what: str = ""
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await read()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: {got!r} != {expected!r}")
        await asyncio.sleep(0.01)


async def test_mention_typing_reply_edits_final(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, chatty_tokens=450) as (daemon, adapter):
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} tell me a story")
        final = await answer(fake, daemon, asked)
        typing = fake.calls_to("POST", TYPING)
        (post,) = fake.calls_to("POST", MESSAGES)
        edits = fake.calls_to("PATCH", ONE_MESSAGE)
        # Typing first, then the reply (a real reply: message_reference to the question).
        assert typing and typing[0].at < post.at
        assert post.body["message_reference"]["message_id"] == int(asked["id"])
        # Coalesced: edits at least edit_interval_s apart (the last, final one excepted).
        gaps = [b.at - a.at for a, b in itertools.pairwise(edits[:-1])]
        assert all(gap >= adapter.edit_interval_s * 0.9 for gap in gaps), gaps
        generation = (edits[-1].at if edits else post.at) - post.at
        assert len(edits) <= math.ceil(generation / adapter.edit_interval_s) + 1
        # What users see is what was stored, plus the note that max_tokens cut it.
        history = await daemon.store.history(f"discord:{fake.general['id']}")
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[0].author_name == "Alice"  # the core names speakers in a channel
        assert history[0].text == "tell me a story"  # the bot's mention is not part of it
        assert final.startswith(history[1].text)
        assert "reply cut at 450 tokens" in final
        # The bot's own MESSAGE_CREATE and MESSAGE_UPDATE events came back and were ignored.
        assert message_count(tmp_path / DB) == 2


async def test_direct_message_without_mention(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        dm = fake.dm_channel(fake.bob)
        asked = await fake.say(fake.bob, dm, "hello, just us")
        assert await answer(fake, daemon, asked)
        history = await daemon.store.history(f"discord:{dm['id']}")
        assert [m.text for m in history if m.role == "user"] == ["hello, just us"]


async def test_thread_is_its_own_channel(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    # Only #general is allowed: its thread is allowed too, #other is not.
    async with hearthbot(
        tmp_path, tiny_model, fake, allowed_channels=[int(fake.general["id"])]
    ) as (daemon, _adapter):
        in_thread = await fake.say(fake.alice, fake.thread, f"{at(fake)} in the thread")
        await answer(fake, daemon, in_thread)
        assert fake.bot_messages(fake.thread) and not fake.bot_messages(fake.general)
        assert message_count(tmp_path / DB, f"discord:{fake.thread['id']}") == 2
        assert message_count(tmp_path / DB, f"discord:{fake.general['id']}") == 0
        await fake.say(fake.alice, fake.other, f"{at(fake)} not allowed here")
        await asyncio.sleep(0.3)
        assert not fake.bot_messages(fake.other)


async def test_reply_to_the_bot_needs_no_mention(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        first = await fake.say(fake.alice, fake.general, f"{at(fake)} first")
        await answer(fake, daemon, first)
        (ours,) = fake.replies_to(first)
        follow_up = await fake.say(fake.alice, fake.general, "and then?", reply_to=ours, ping=False)
        await answer(fake, daemon, follow_up)
        users = [m.text for m in await daemon.store.history(f"discord:{fake.general['id']}")]
        assert "and then?" in users
        # A reply to someone else, without a mention, is not for the bot.
        chatter = await fake.say(fake.bob, fake.general, "unrelated", reply_to=first, ping=False)
        await asyncio.sleep(0.3)
        assert fake.replies_to(chatter) == []


async def test_reply_to_an_unremembered_message_quotes_it(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, adapter):
        announcement = await fake.say(fake.bob, fake.general, f"the code is 42, ask {at(fake)}")
        await answer(fake, daemon, announcement)
        await daemon.store.reset_channel(f"discord:{fake.general['id']}")  # forgotten
        asked = await fake.say(
            fake.alice, fake.general, f"{at(fake)} what did he mean?", reply_to=announcement
        )
        await answer(fake, daemon, asked)
        channel = f"discord:{fake.general['id']}"
        (user,) = [m.text for m in await daemon.store.history(channel) if m.role == "user"]
        assert user == "what did he mean?"  # the quote is read when the prompt is built

        async def asking() -> str:
            prompt = await daemon.context.build(
                channel, "sys", reserve=64, multi_user=True, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            (text,) = [m["content"] for m in prompt.messages if m["role"] == "user"]
            return text

        assert (await asking()).startswith("Alice: (replying to Bob:)\n> the code is 42, ask")
        assert (await asking()).endswith("what did he mean?")
        adapter.reader.quotes.recent = RecentMessages()  # as after a restart: read by REST
        assert "> the code is 42" in await asking()
        assert fake.calls_to("GET", ONE_MESSAGE)
        # Deleted on Discord: gone from the next prompt, and from the adapter's memory.
        await fake.user_delete(announcement)
        await eventually(asking, "Alice: what did he mean?", what="the quote gone")
        assert adapter.reader.quotes.recent.get(str(announcement["id"])) is None


async def test_bots_webhooks_and_itself_are_ignored(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        await fake.say(fake.other_bot, fake.general, f"{at(fake)} hello from a bot")
        await fake.say(fake.other_bot, fake.dm_channel(fake.other_bot), "a bot in DMs")
        await fake.say(fake.bob, fake.general, f"{at(fake)} via a webhook", webhook_id=77)
        await fake.say(fake.bot, fake.general, f"{at(fake)} talking to myself")
        await fake.say(fake.alice, fake.general, "not addressed to the bot at all")
        await nothing_happens(fake, daemon)
        assert message_count(tmp_path / DB) == 0


async def test_two_hearthbots_in_one_channel_never_talk_to_each_other(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """Two daemons, two bot accounts, one channel. Each answers the person who speaks to it.
    Whatever one's model writes — here a mention of the other and a reply to the other's
    answer, sent through its own discord.py client — the other never answers."""
    token_b, bot_b = fake.add_bot("hearthbot-two")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        hearthbot(tmp_path / "a", tiny_model, fake) as (daemon_a, adapter_a),
        hearthbot(tmp_path / "b", tiny_model, fake, token=token_b) as (daemon_b, _adapter_b),
    ):
        both = f"{at(fake)} {fake.mention(bot_b)}"
        hello = await fake.say(fake.alice, fake.general, f"{both} hello, both of you")
        for bot in (fake.bot, bot_b):
            await until(lambda bot=bot: bool(fake.replies_to(hello, bot)), 20, "both answers")
        (answer_b,) = fake.replies_to(hello, bot_b)
        # Alice answers B's reply and mentions A: both are spoken to again.
        again = await fake.say(fake.alice, fake.general, f"{at(fake)} and you?", reply_to=answer_b)
        for bot in (fake.bot, bot_b):
            await until(lambda bot=bot: bool(fake.replies_to(again, bot)), 20, "both answers")
        # A's model addresses B, once by mention and once as a reply to B's answer.
        general = adapter_a.client.get_channel(int(fake.general["id"]))
        written = [
            await general.send(f"{fake.mention(bot_b)} what do you think?"),
            await general.send(
                "over to you", reference=general.get_partial_message(answer_b["id"])
            ),
        ]
        await asyncio.sleep(1.0)  # room for a loop to start, if there were one
        for daemon in (daemon_a, daemon_b):
            await asyncio.wait_for(daemon.wait_idle(), 20)
            first, second = await texts_in(daemon, f"discord:{fake.general['id']}")  # Alice's
            assert "hello, both of you" in first and second.endswith("and you?")
    for bot in (fake.bot, bot_b):
        answers = [
            m
            for m in fake.bot_messages(fake.general, bot)
            if "message_reference" in m and int(m["id"]) not in {w.id for w in written}
        ]
        replied_to = {m["message_reference"]["message_id"] for m in answers}
        assert replied_to <= {hello["id"], again["id"]}, "a bot answered a bot"
    assert fake.calls_to("PUT", r"/channels/\d+/messages/\d+/reactions/.+") == []


async def test_access_lists(tmp_path: Path, tiny_model: Path, fake: FakeDiscord) -> None:
    async with hearthbot(
        tmp_path,
        tiny_model,
        fake,
        blocked_users=[int(fake.bob["id"])],
        allow_dms=False,
        allowed_guilds=[fake.guild_id],
    ) as (daemon, _adapter):
        await fake.say(fake.bob, fake.general, f"{at(fake)} I am blocked")
        await fake.say(fake.alice, fake.dm_channel(fake.alice), "DMs are off")
        await nothing_happens(fake, daemon)
        interaction = await fake.slash(fake.bob, fake.general, "status")
        await until(lambda: bool(fake.responses(interaction)), what="the refusal")
        (response,) = fake.responses(interaction)
        assert response["data"]["content"] == COMMAND_NOT_ALLOWED
        assert response["data"]["flags"] & 64  # ephemeral: only bob sees it
        allowed = await fake.say(fake.alice, fake.general, f"{at(fake)} but I may")
        assert await answer(fake, daemon, allowed)


async def test_text_attachment_is_read_and_others_named(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, attachment_max_kb=1) as (daemon, _adapter):
        paste = fake.attachment("message.txt", b"line one\nline two\n", "text/plain; charset=utf-8")
        big = fake.attachment("big.log", b"x" * 3000, "text/plain")
        more = fake.attachment("more.md", b"# more\n", "text/markdown")
        image = fake.attachment("cat.png", b"\x89PNG\x00" * 100, "image/png")
        asked = await fake.say(
            fake.alice, fake.general, f"{at(fake)} summarize", attachments=[paste, big, more, image]
        )
        await answer(fake, daemon, asked)
        (user,) = [
            m.text
            for m in await daemon.store.history(f"discord:{fake.general['id']}")
            if m.role == "user"
        ]
        assert user.startswith("summarize\n\n[attachment message.txt]\nline one\nline two\n\n[")
        # attachment_max_kb is what is read of all of them together; then they are only named.
        left = 1024 - len("line one\nline two\n")
        cut = "\n[… cut: 1 KB of attachments read per message]"
        assert "[attachment big.log]\n" + "x" * left + cut in user
        assert "x" * (left + 1) not in user
        assert "[attachment more.md: text/markdown, 7 bytes, not read]" in user
        assert user.endswith("[image: cat.png]")  # a picture is named as on every platform


async def test_text_command_with_mention(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} !persona")
        listing = await answer(fake, daemon, asked)
        assert "coder" in listing and "assistant" in listing
        refused = await fake.say(fake.alice, fake.general, f"{at(fake)} !persona coder")
        assert "Only an admin" in await answer(fake, daemon, refused)
        assert message_count(tmp_path / DB) == 0  # commands are not conversation


async def test_admin_forgets_a_user_named_by_mention(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """`!forget @Bob` names Bob by his ID, as /forget does: his display name is not his key."""
    admin = int(fake.admin["id"])
    async with hearthbot(tmp_path, tiny_model, fake, admins=[admin]) as (daemon, _adapter):
        spoken = await fake.say(fake.bob, fake.general, f"{at(fake)} remember me")
        await answer(fake, daemon, spoken)
        asked = await fake.say(
            fake.admin, fake.general, f"{at(fake)} !forget {fake.mention(fake.bob)}"
        )
        done = await answer(fake, daemon, asked)
        assert done == f"Deleted 1 messages from discord:{fake.bob['id']} everywhere."
        assert await texts_in(daemon, f"discord:{fake.general['id']}") == []


async def test_slash_commands_and_autocomplete(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    admin = int(fake.admin["id"])
    async with hearthbot(tmp_path, tiny_model, fake, admins=[admin]) as (daemon, _adapter):
        registered = {c["name"] for c in fake.commands["global"]}
        assert registered == {
            *("help", "status", "usage", "reset", "persona", "temperature", "seed", "trigger"),
            "autothread",
            *("forget", "remember", "notes", "summary"),
        }

        async def run(user: Json, name: str, *options: Json, where: Json | None = None) -> Json:
            interaction = await fake.slash(user, where or fake.general, name, list(options))
            await until(lambda: bool(fake.responses(interaction)), what=f"/{name} answered")
            return fake.responses(interaction)[0]

        typed = await fake.autocomplete(fake.alice, fake.general, "persona", "name", "co")
        await until(lambda: bool(fake.responses(typed)), what="autocomplete")
        assert fake.responses(typed)[0] == {
            "type": 8,
            "data": {"choices": [{"name": "coder", "value": "coder"}]},
        }

        coder = {"name": "name", "type": 3, "value": "coder"}
        refused = await run(fake.alice, "persona", coder)  # not an admin
        assert "Only an admin" in refused["data"]["content"]
        assert refused["data"]["flags"] & 64  # a refusal is for the asker alone
        changed = await run(fake.admin, "persona", coder)
        assert changed["type"] == 4 and "Persona is now coder" in changed["data"]["content"]
        assert not changed["data"].get("flags", 0) & 64  # the channel sees the change
        status = await run(fake.alice, "status")
        assert "Persona: coder" in status["data"]["content"]
        assert status["data"]["flags"] & 64  # only the asker sees it
        hot = await run(fake.admin, "temperature", {"name": "value", "type": 10, "value": 1.5})
        assert "1.5" in hot["data"]["content"]
        help_text = (await run(fake.bob, "help"))["data"]["content"]
        assert "!forget" in help_text
        # In a DM anyone may change their own chat.
        dm = fake.dm_channel(fake.alice)
        own = await run(fake.alice, "persona", coder, where=dm)
        assert "Persona is now coder" in own["data"]["content"]
        # /forget a named user is the admin's `!forget <id>`.
        spoken = await fake.say(fake.bob, fake.general, f"{at(fake)} remember me")
        await answer(fake, daemon, spoken)
        bob = {"name": "user", "type": 6, "value": fake.bob["id"]}
        forgot = await run(fake.admin, "forget", bob)
        assert f"discord:{fake.bob['id']}" in forgot["data"]["content"]
        assert message_count(tmp_path / DB) == 1  # only the answer stays


async def test_slow_command_is_deferred_then_answered(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_interactions, "DEFER_AFTER_S", 0.0)
    async with hearthbot(tmp_path, tiny_model, fake) as (_daemon, _adapter):
        interaction = await fake.slash(fake.alice, fake.general, "status")
        await until(lambda: len(fake.responses(interaction)) == 2, what="defer and answer")
        deferred, edited = fake.responses(interaction)
        assert deferred["type"] == 5 and deferred["data"]["flags"] & 64
        assert edited["type"] == "edit_original"
        assert "Model: hearthbot-tiny-test" in edited["data"]["content"]


async def test_stop_reaction(tmp_path: Path, tiny_model: Path, fake: FakeDiscord) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, chatty_tokens=4000, n_ctx=8192) as (
        daemon,
        adapter,
    ):
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} go on forever")
        ours = await first_text(fake, adapter, asked)
        # The tiny model can write 4,000 tokens before a reaction makes its way round: the
        # model waits while the ⏹ travels, so the stop meets the answer being written.
        async with model_held(daemon.backend):
            await fake.react(fake.alice, ours, "⏹️")
            await until(lambda: any(g.cancelled for g in daemon.in_flight), what="the stop")
        final = await answer(fake, daemon, asked)
        assert "stopped on request" in final
        (_, assistant) = await daemon.store.history(f"discord:{fake.general['id']}")
        assert len(assistant.text) < 4000 * 3


async def test_a_stop_cuts_only_the_answer_it_was_given_on(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """#13.5: Alice's 🔁 on her old answer registered that answer for the regenerated one at
    once, and her ⏹ on it then stopped whatever the channel was generating: Bob's answer."""
    async with hearthbot(tmp_path, tiny_model, fake, chatty_tokens=4000, n_ctx=8192) as (
        daemon,
        adapter,
    ):
        handled: list[tuple[object, Outcome]] = []
        sink = adapter._sink

        async def spy(event: Any) -> Outcome:
            outcome = await sink(event)
            handled.append((event, outcome))
            return outcome

        adapter._sink = spy

        def writing(name: str) -> bool:
            return any(g.request.messages[-1]["content"].startswith(name) for g in daemon.in_flight)

        mine = await fake.say(fake.alice, fake.general, f"{at(fake)} go on forever")
        old = await first_text(fake, adapter, mine, "Alice's ")
        await fake.react(fake.alice, old, "⏹️")  # her own, so a short answer to regenerate
        await answer(fake, daemon, mine)
        bobs = await fake.say(fake.bob, fake.general, f"{at(fake)} go on forever")
        bobs_first = await first_text(fake, adapter, bobs, "Bob's ")
        assert writing("Bob:")
        await fake.react(fake.alice, old, "🔁")  # queued behind Bob's answer
        await until(lambda: daemon.status().queued == 1, what="the regenerate queued")
        await fake.react(fake.alice, old, "⏹️")
        await until(lambda: isinstance(handled[-1][0], StopRequested), what="Alice's stop")
        assert handled[-1][1] is Outcome.IGNORED  # her answer is not being written yet
        assert writing("Bob:") and not any(g.cancelled for g in daemon.in_flight)
        # Bob may stop his own; then Alice hers, once it is being written.
        await fake.react(fake.bob, bobs_first, "⏹️")
        await until(lambda: writing("Alice:"), what="Alice's answer written again")
        await fake.react(fake.alice, old, "⏹️")
        await asyncio.wait_for(daemon.wait_idle(), 60)
        assert [outcome for event, outcome in handled if isinstance(event, StopRequested)] == [
            Outcome.APPLIED,
            Outcome.IGNORED,
            Outcome.APPLIED,
            Outcome.APPLIED,
        ]
        assert "stopped on request" in fake.messages[int(old["id"])]["content"]


async def test_regenerate_reaction_edits_the_answer_in_place(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} a question")
        await answer(fake, daemon, asked)
        (ours,) = fake.replies_to(asked)
        posts = len(fake.calls_to("POST", MESSAGES))
        edits_of_ours = f"/channels/\\d+/messages/{ours['id']}"
        edits = len(fake.calls_to("PATCH", edits_of_ours))
        await fake.react(fake.bob, ours, "🔁")  # not bob's question: ignored
        await asyncio.sleep(0.2)
        assert len(fake.calls_to("PATCH", edits_of_ours)) == edits
        await fake.react(fake.alice, ours, "🔁")
        await until(
            lambda: len(fake.calls_to("PATCH", edits_of_ours)) > edits,
            what="the old answer edited",
        )
        await daemon.wait_idle()
        assert len(fake.calls_to("POST", MESSAGES)) == posts  # no new message
        history = await daemon.store.history(f"discord:{fake.general['id']}")
        assert [m.role for m in history] == ["user", "assistant"]
        assert fake.messages[int(ours["id"])]["content"].startswith(history[1].text)


async def test_edits_and_deletions_reach_the_store(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        channel = f"discord:{fake.general['id']}"
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} my secret is 1234")
        await answer(fake, daemon, asked)
        await fake.user_edit(asked, f"{at(fake)} my secret is (redacted)")
        await eventually(
            lambda: texts_in(daemon, channel), ["my secret is (redacted)"], what="the edit"
        )
        await fake.user_delete(asked)
        await eventually(lambda: texts_in(daemon, channel), [], what="the deletion")
        assert [m.role for m in await daemon.store.history(channel)] == ["assistant"]


async def test_gateway_drops_resume_without_loss_or_repeats(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, adapter):
        for trouble in (fake.drop, fake.request_reconnect):  # close code 4000, then op 7
            await trouble()
            # Said while the bot is disconnected: Discord keeps it for the RESUME.
            during = await fake.say(fake.alice, fake.general, f"{at(fake)} are you there?")
            assert fake.connected is False
            assert await answer(fake, daemon, during)
        assert fake.identifies == 1 and len(fake.resumes) == 2
        assert fake.gateway_paths == ["/gateway", "/resume", "/resume"]  # resume_gateway_url
        assert adapter.is_connected()
        # Discord may deliver an event twice: it is still answered once.
        again = await fake.say(fake.bob, fake.general, f"{at(fake)} once please")
        await answer(fake, daemon, again)
        await fake.dispatch("MESSAGE_CREATE", again)
        await asyncio.sleep(0.3)
        await daemon.wait_idle()
        assert len(fake.replies_to(again)) == 1
        for asked in [m for m in fake.messages.values() if "are you there" in m["content"]]:
            assert len(fake.replies_to(asked)) == 1


async def test_a_new_session_catches_up_on_what_it_missed(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """Discord replays nothing to a fresh session (after a gap too long to RESUME): the bot
    reads each channel back from the last message it was done with."""
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        seen = await fake.say(fake.alice, fake.general, f"{at(fake)} hello")
        await answer(fake, daemon, seen)
        fake.forget_sessions()  # first: the client may try to RESUME at once
        await fake.drop()
        missed = [
            await fake.say(fake.alice, fake.general, f"{at(fake)} are you there?"),
            # Addressed by the bot's role: only known once the guild is back after READY.
            await fake.say(fake.bob, fake.general, f"<@&{fake.bot_role_id}> and now?"),
        ]
        assert fake.connected is False  # said in the gap, and lost with the session
        for asked in missed:
            assert await answer(fake, daemon, asked)
        assert fake.identifies == 2 and fake.resumes  # it tried to resume first
        await asyncio.sleep(0.3)
        await daemon.wait_idle()
        assert [len(fake.replies_to(m)) for m in [seen, *missed]] == [1, 1, 1]


async def test_a_restart_answers_what_was_asked_while_away_once(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """Three runs on the fake's clock (seconds before now): -400 a question in #other; the
    bot down; -350 a question there that will be too old; -100 a run answering questions in
    #general and a DM, whose positions are then lost (a kill -9 between saves); the bot down;
    -40 and 0 fresh questions. The last run answers the fresh ones, once, and nothing else."""
    window = 300.0

    def running() -> Any:
        return hearthbot(tmp_path, tiny_model, fake, catch_up_window_s=window)

    dm = fake.dm_channel(fake.alice)
    fake.clock_offset_s = -400
    async with running() as (daemon, _):
        early = await fake.say(fake.alice, fake.other, f"{at(fake)} long ago")
        await answer(fake, daemon, early)
    fake.clock_offset_s = -350
    too_old = await fake.say(fake.alice, fake.other, f"{at(fake)} asked while away, long ago")
    fake.clock_offset_s = -100
    async with running() as (daemon, _):
        before = [
            await fake.say(fake.alice, fake.general, f"{at(fake)} before the restart"),
            await fake.say(fake.alice, fake.general, f"{at(fake)} !help"),  # never stored
            await fake.say(fake.alice, dm, "a DM before the restart"),
        ]
        for asked in before:
            await answer(fake, daemon, asked)
    state = tmp_path / "discord" / "state.json"
    positions = json.loads(state.read_text())
    for asked in before:  # as if killed before the last save: these are read back
        channel = positions["channels"][asked["channel_id"]]
        channel[0] = min(channel[0], int(asked["id"]) - 1)
    state.write_text(json.dumps(positions))
    fake.clock_offset_s = -40
    fresh = [await fake.say(fake.alice, fake.general, f"{at(fake)} asked while you were away")]
    asked_at = fake.now()
    fake.clock_offset_s = 0
    await fake.say(fake.bob, fake.general, "chatter, not for the bot")
    fresh += [
        await fake.say(fake.bob, fake.general, f"{at(fake)} !status"),
        await fake.say(fake.alice, dm, "and a DM while you were away"),
    ]
    async with running() as (daemon, _):
        for asked in fresh:
            await until(lambda asked=asked: bool(fake.replies_to(asked)), 20, "a read-back answer")
        await asyncio.sleep(0.3)
        await daemon.wait_idle()
    replies = [len(fake.replies_to(m)) for m in [early, too_old, *before, *fresh]]
    assert replies == [1, 0, 1, 1, 1, 1, 1, 1]
    # Stored with when it was asked, not when it was read back.
    with sqlite3.connect(tmp_path / "hearthbot.db") as db:
        ((created_at,),) = db.execute(
            "SELECT created_at FROM messages WHERE platform_message_id = ?", (fresh[0]["id"],)
        )
    assert abs(created_at - asked_at) < 1 and fake.now() - created_at > 30


async def test_missing_intent_resolves_failure(fake: FakeDiscord) -> None:
    fake.message_content_enabled = False
    adapter = make_adapter(fake)
    try:
        await adapter.start(RecordingSink())  # returns at once, before any connection
        line = await asyncio.wait_for(adapter.failure, 10)
    finally:
        await adapter.stop()
    assert "4014" in line and "Message Content" in line and "\n" not in line
    assert not adapter.is_connected() and not adapter.errors


async def test_bad_token_resolves_failure(fake: FakeDiscord) -> None:
    adapter = make_adapter(fake, token="not-the-right-token")
    try:
        await adapter.start(RecordingSink())
        line = await asyncio.wait_for(adapter.failure, 10)
    finally:
        await adapter.stop()
    assert "token" in line and "401" in line and not adapter.errors
    assert fake.calls_to("GET", "/users/@me")[0].status == 401


async def test_discord_outage_does_not_block_start(unused_tcp_port: int) -> None:
    fake = FakeDiscord()  # never started: nothing listens on the port
    fake.port = unused_tcp_port
    adapter = make_adapter(fake)
    try:
        await asyncio.wait_for(adapter.start(RecordingSink()), 1)
        await asyncio.sleep(0.3)  # a few login attempts fail and are retried
        assert not adapter.failure.done() and not adapter.is_connected()
    finally:
        await adapter.stop()


@pytest.mark.parametrize(
    ("content_intent", "token", "expected"),
    [(False, None, "close code 4014"), (True, "wrong-token", "HTTP 401")],
)
def test_cli_exits_non_zero_with_one_line(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    content_intent: bool,
    token: str | None,
    expected: str,
) -> None:
    with ThreadedFake(message_content_enabled=content_intent) as fake:
        config = tmp_path / "hearthbot.toml"
        section = discord_section(fake, token=token or fake.token)
        config.write_text(
            f'[model]\npath = "{tiny_model}"\nn_ctx = 512\n'
            f'[bot]\ndata_dir = "{tmp_path}"\n'
            "[discord]\n"
            + "".join(f'{k} = "{v}"\n' for k, v in section.items() if k != "edit_interval_s")
        )
        assert main(["--config", str(config), "run"]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("hearthbot: discord:")]
    assert expected in line
    assert fake.token not in err


async def test_a_failing_event_handler_is_recorded(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """An error in a gateway event's handler is logged and reaches the adapter's error
    record. Before, on_error's own log call raised TypeError (`event` is structlog's
    positional argument too), so the error was lost and the task died unretrieved."""
    async with hearthbot(tmp_path, tiny_model, fake) as (_daemon, adapter):
        broken = RuntimeError("a handler broke")

        async def on_message(message: Any) -> None:
            raise broken

        adapter.on_message = on_message  # type: ignore[method-assign]
        await fake.say(fake.alice, fake.general, f"{at(fake)} hello")
        await until(lambda: broken in adapter.errors, 30, "the error recorded")
        adapter.errors.clear()  # expected here: hearthbot() fails a test that left any
