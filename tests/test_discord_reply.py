"""The Discord adapter alone against the fake, no model: a reply streamed by coalesced
edits and split past 2000 characters, every way Discord can say no (429, 404, 403, closed
DMs), a reply restored before login, regenerating in place, and the lookups the adapter makes
by itself (the question behind an old answer, an uncached thread's parent)."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

import adapters.discord.adapter as discord_adapter
import adapters.discord.reply as discord_reply
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.reply import MessageReply
from bot.events import Incoming, RegenerateRequested, StopRequested
from support.fake_discord import (
    FakeDiscord,
    Json,
    RecordingSink,
    adapter_on,
    asked,
    connected,
    make_adapter,
    until,
)

MESSAGES = r"/channels/\d+/messages"
ONE_MESSAGE = r"/channels/\d+/messages/\d+"


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def adapter(fake: FakeDiscord, sink: RecordingSink) -> AsyncIterator[DiscordAdapter]:
    async with adapter_on(fake, sink) as adapter:
        yield adapter


def contents(fake: FakeDiscord, message: Json) -> list[str]:
    """What the channel shows as the answer to `message`, in order."""
    first = fake.replies_to(message)
    assert len(first) == 1, first
    later = [
        m
        for m in fake.bot_messages(fake.general)
        if int(m["id"]) > int(first[0]["id"]) and "message_reference" not in m
    ]
    return [m["content"] for m in [first[0], *later]]


async def test_streamed_reply_coalesces_edits(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.typing()
    await until(lambda: bool(fake.calls_to("POST", r"/channels/\d+/typing")), what="typing")
    started = asyncio.get_running_loop().time()
    text = ""
    for i in range(100):  # ~1 s of tokens, one every 10 ms
        text += f"word{i} "
        await reply.update(text)
        await asyncio.sleep(0.01)
    elapsed = asyncio.get_running_loop().time() - started
    await reply.finish(text + "end.")
    (sent,) = fake.calls_to("POST", MESSAGES)
    edits = fake.calls_to("PATCH", ONE_MESSAGE)
    assert sent.body["message_reference"]["message_id"] == int(incoming.message_id)
    assert sent.body["message_reference"]["fail_if_not_exists"] is False
    # At most one edit per interval while streaming, plus the final edit.
    interval = adapter.edit_interval_s
    assert 3 <= len(edits) <= math.ceil(elapsed / interval) + 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits[:-1])]  # the final edit is free
    assert all(gap >= interval * 0.9 for gap in gaps), gaps
    assert edits[-1].body["content"] == text + "end."
    (message,) = [m for m in fake.messages.values() if m["content"] == text + "end."]
    assert message["author"]["id"] == fake.bot["id"]
    # Typing stops once text is on screen: no typing call after the first message.
    typing = fake.calls_to("POST", r"/channels/\d+/typing")
    assert all(call.at < sent.at for call in typing)


async def test_typing_is_kept_alive_until_the_first_text(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_reply, "TYPING_RENEW_S", 0.05)
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    await reply.typing()
    await reply.typing()  # the core calls it when queued and again when generating: one loop
    await until(lambda: len(fake.calls_to("POST", r"/channels/\d+/typing")) >= 4, what="renewals")
    await reply.finish("done")
    count = len(fake.calls_to("POST", r"/channels/\d+/typing"))
    await asyncio.sleep(0.2)
    assert len(fake.calls_to("POST", r"/channels/\d+/typing")) == count


async def test_long_answer_splits_without_breaking_a_code_block(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    message = fake.messages[int(incoming.message_id)]
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(80))
    answer = "Here is the code:\n\n```python\ndef main():\n" + code + "\n```\n\nThat is all."
    assert len(answer) > 2000
    reply = adapter.open_reply(incoming)
    await reply.update(answer[:1500])
    await reply.finish(answer)
    parts = contents(fake, message)
    assert len(parts) == 2
    assert all(len(p) <= 2000 for p in parts)
    assert parts[0].startswith("Here is the code:") and parts[0].endswith("```")
    assert parts[1].startswith("```python\n") and parts[1].endswith("That is all.")
    # Nothing lost or doubled: the parts hold every line of the answer once.
    joined = "\n".join(parts)
    for i in range(80):
        assert joined.count(f"value_{i} = compute({i})") == 1
    # The continuation is a plain message, not another reply.
    posts = fake.calls_to("POST", MESSAGES)
    assert [("message_reference" in c.body) for c in posts] == [True, False]


async def test_the_model_cannot_ping_anyone(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    await reply.update(f"@everyone @here {fake.mention(fake.bob)}")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first message")
    await reply.finish(f"@everyone @here {fake.mention(fake.bob)} <@&{fake.bot_role_id}>")
    await adapter.refuse(incoming, "busy")
    bodies = [c.body for c in fake.calls if isinstance(c.body, dict) and "content" in c.body]
    assert len(bodies) >= 2
    assert all(b["allowed_mentions"] == {"parse": []} for b in bodies)


async def test_a_rate_limited_edit_is_retried(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    await reply.update("first")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first message")
    fake.rate_limit_next("PATCH", ONE_MESSAGE, retry_after=0.2)
    await reply.finish("first and final")
    statuses = [c.status for c in fake.calls_to("PATCH", ONE_MESSAGE)]
    assert statuses == [429, 200]  # discord.py waited retry_after and sent it again
    (message,) = fake.replies_to(fake.messages[int(incoming.message_id)])
    assert message["content"] == "first and final"


async def test_a_deleted_reply_stops_cleanly(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.update("partial")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first message")
    fake.fail_next("PATCH", ONE_MESSAGE, 404, {"message": "Unknown Message", "code": 10008})
    await reply.update("partial and more")
    await until(lambda: reply.dead, what="the reply to give up")
    # The core is asked to stop generating what nobody can see any more...
    assert sink.events == [StopRequested("discord", incoming.channel_id, incoming.message_id)]
    # ...and nothing more is sent for this reply, without an exception anywhere.
    calls = len(fake.calls)
    await reply.update("even more")
    await reply.finish("final")
    await asyncio.sleep(0.3)
    assert len(fake.calls) == calls


class Warnings:
    """Stands in for a module's logger: keeps the warnings' event names."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def warning(self, event: str, **_: Any) -> None:
        self.events.append(event)

    def info(self, event: str, **_: Any) -> None:
        pass


async def test_no_permission_is_logged_once_per_channel(
    fake: FakeDiscord,
    sink: RecordingSink,
    adapter: DiscordAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings = Warnings()
    monkeypatch.setattr(discord_adapter, "log", warnings)
    fake.forbidden_channels.add(int(fake.general["id"]))
    for text in ("one", "two"):
        incoming = await asked(fake, sink, text)
        reply = adapter.open_reply(incoming)
        await reply.finish(f"answer {text}")
        await adapter.refuse(incoming, "busy")
    assert len([e for e in warnings.events if "no permission" in e]) == 1
    assert [c.status for c in fake.calls_to("POST", MESSAGES)] == [403, 403]
    assert fake.bot_messages(fake.general) == []


async def test_closed_dms_are_handled(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    dm = fake.dm_channel(fake.bob)
    fake.dms_closed.add(int(fake.bob["id"]))
    await fake.say(fake.bob, dm, "hello in private")
    await until(lambda: bool(sink.events), what="the DM at the sink")
    reply = adapter.open_reply(sink.events[0])
    await reply.finish("an answer that cannot be delivered")
    assert [c.status for c in fake.calls_to("POST", MESSAGES)] == [403]


async def test_a_restored_message_is_answered_once_logged_in(
    fake: FakeDiscord, sink: RecordingSink
) -> None:
    """After a restart the core opens replies for pending messages before the adapter has
    logged in: the reply works from the stored IDs alone and waits for the login."""
    message = fake._message(fake.general, fake.alice, "asked before the restart")
    restored = Incoming(
        platform="discord",
        channel_id=fake.general["id"],
        message_id=message["id"],
        author_id=fake.alice["id"],
        author_name="Alice",
        text="asked before the restart",
        server_id=str(fake.guild_id),
    )
    adapter = make_adapter(fake)
    try:
        reply = adapter.open_reply(restored)
        assert isinstance(reply, MessageReply)
        await reply.fail("missed while offline")  # returns at once: not logged in yet
        assert fake.calls == []
        await adapter.start(sink)
        await asyncio.wait_for(reply.done.wait(), 5)
        (answer,) = fake.replies_to(message)
        assert answer["content"] == "missed while offline"
    finally:
        await adapter.stop()
    assert not adapter.errors, list(adapter.errors)


async def test_regenerated_answer_reuses_and_trims_the_old_messages(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    first = adapter.open_reply(incoming)
    assert isinstance(first, MessageReply)
    await first.finish("x" * 1900 + "\n\n" + "y" * 1900)  # two messages
    assert len(first.message_ids) == 2
    again = MessageReply(adapter, incoming, reuse=first.message_ids)
    await again.finish("short now")
    assert again.message_ids == first.message_ids[:1]
    assert fake.messages[first.message_ids[0]]["content"] == "short now"
    assert first.message_ids[1] not in fake.messages  # the leftover part was deleted
    assert len(fake.calls_to("POST", MESSAGES)) == 2  # nothing new was posted


async def test_refusal_is_a_reaction(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    incoming = await asked(fake, sink)
    await adapter.refuse(incoming, "busy")
    (call,) = fake.calls_to("PUT", r"/channels/\d+/messages/\d+/reactions/.+/@me")
    assert call.status == 204 and call.path.endswith("/reactions/⏳/@me")
    assert fake.calls_to("POST", MESSAGES) == []


async def test_the_fake_rejects_what_discord_rejects(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    import discord

    http = adapter.client.http  # type: ignore[union-attr]
    channel = int(fake.general["id"])
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel)
    user_message = await fake.say(fake.alice, fake.general, "hi")

    async def rejected(body: Json, route: Any = route) -> discord.HTTPException:
        with pytest.raises(discord.HTTPException) as caught:
            await http.request(route, json=body)
        return caught.value

    none = {"parse": []}
    assert (await rejected({"content": "", "allowed_mentions": none})).code == 50006
    assert (await rejected({"content": " \n", "allowed_mentions": none})).code == 50006
    too_long = await rejected({"content": "x" * 2001, "allowed_mentions": none})
    assert too_long.status == 400 and too_long.code == 50035
    for bad in (
        {"parse": ["users"], "users": [1]},
        {"parse": ["nobody"]},
        {"parse": [], "pings": True},
        "none",
    ):
        assert (await rejected({"content": "x", "allowed_mentions": bad})).code == 50035
    unknown = {"message_id": 123, "channel_id": channel}
    assert (await rejected({"content": "x", "message_reference": unknown})).code == 50035
    edit = discord.http.Route(
        "PATCH",
        "/channels/{channel_id}/messages/{message_id}",
        channel_id=channel,
        message_id=int(user_message["id"]),
    )
    assert (await rejected({"content": "mine now"}, edit)).code == 50005
    fake.calls.clear()  # these bodies were wrong on purpose


async def test_regenerate_after_a_restart_finds_the_question(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    """🔁 on an answer this process never sent: the answer's reference leads to the question."""
    question = fake._message(fake.general, fake.alice, f"{fake.mention(fake.bot)} why?")
    old_answer = fake._message(fake.general, fake.bot, "because", reference=question)
    await fake.react(fake.alice, old_answer, "⏹️")  # nothing of ours is being written
    await fake.react(fake.bob, old_answer, "🔁")  # not bob's question
    await fake.react(fake.alice, old_answer, "🔁")
    await until(lambda: bool(sink.events), what="the regenerate request")
    (request,) = sink.events
    assert isinstance(request, RegenerateRequested)
    assert request.message.message_id == question["id"]
    assert request.message.text == "why?" and request.message.author_name == "Alice"
    # Our answer, then the question it references (for bob's reaction too: the asker is
    # only known from the question).
    got = [c.path for c in fake.calls if c.method == "GET" and "/messages/" in c.path]
    both = [f"/channels/{fake.general['id']}/messages/{m['id']}" for m in (old_answer, question)]
    assert got == both * 2


async def test_regenerate_only_where_the_user_may_ask(
    fake: FakeDiscord, sink: RecordingSink
) -> None:
    """#13.6: 🔁 went past the access lists and allow_dms (here DMs are off): an answer in a
    DM was regenerated for a user who may not ask there."""
    async with adapter_on(fake, sink, allow_dms=False):
        dm = fake.dm_channel(fake.alice)
        in_dm = fake._message(dm, fake.alice, "why?")
        dm_answer = fake._message(dm, fake.bot, "because", reference=in_dm)
        question = fake._message(fake.general, fake.alice, f"{fake.mention(fake.bot)} why?")
        old_answer = fake._message(fake.general, fake.bot, "because", reference=question)
        await fake.react(fake.alice, dm_answer, "🔁")
        await fake.react(fake.alice, old_answer, "🔁")
        await until(lambda: bool(sink.events), what="the regenerate request")
        (request,) = sink.events
        assert isinstance(request, RegenerateRequested)
        assert request.message.message_id == question["id"]
        assert request.requester_id == fake.alice["id"] and not request.requester_is_admin
        # The DM's answer was not even looked up.
        assert not [c for c in fake.calls if c.method == "GET" and dm["id"] in c.path]


async def test_slash_commands_can_be_synced_to_chosen_servers(fake: FakeDiscord) -> None:
    adapter = make_adapter(fake, command_guilds=[fake.guild_id])
    try:
        await adapter.start(RecordingSink())
        await connected(adapter, fake)
        assert list(fake.commands) == [str(fake.guild_id)]
        assert fake.calls_to("PUT", f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands")
    finally:
        await adapter.stop()
    assert not adapter.errors, list(adapter.errors)


async def test_an_uncached_thread_is_looked_up_for_access(fake: FakeDiscord) -> None:
    sink = RecordingSink()
    adapter = make_adapter(fake, allowed_channels=[int(fake.general["id"])])
    try:
        await adapter.start(sink)
        await connected(adapter, fake)
        thread = fake.unseen_thread(fake.general, "new thread")
        elsewhere = fake.unseen_thread(fake.other, "other thread")
        await fake.say(fake.alice, elsewhere, f"{fake.mention(fake.bot)} not here")
        await fake.say(fake.alice, thread, f"{fake.mention(fake.bot)} in a new thread")
        await until(lambda: bool(sink.events), what="the thread message")
        await asyncio.sleep(0.1)
        (incoming,) = sink.events
        assert incoming.channel_id == thread["id"] and incoming.text == "in a new thread"
        assert fake.calls_to("GET", f"/channels/{thread['id']}")
    finally:
        await adapter.stop()
    assert not adapter.errors, list(adapter.errors)
