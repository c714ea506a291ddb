"""The final text of an answer reaches Discord although Discord fails for a moment: the
final edit (or send) is tried again with backoff, since the answer is already stored and
nothing else would ever show it. The adapter alone against the fake, then the whole daemon."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import adapters.discord.reply as discord_reply
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.reply import MessageReply
from bot.events import RegenerateRequested
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import (
    DISCONNECT,
    FakeDiscord,
    Json,
    RecordingSink,
    adapter_on,
    asked,
    until,
)

MESSAGES = r"/channels/\d+/messages"
ONE_MESSAGE = r"/channels/\d+/messages/\d+"
# Ways a request fails that discord.py does not retry itself (or has stopped retrying).
SERVER_ERROR = (503, {"message": "Service Unavailable", "code": 0})
CLOUDFLARE_429 = (429, {"message": "You are being rate limited."})  # no Via header
TRANSIENT = [SERVER_ERROR, CLOUDFLARE_429, (DISCONNECT, {})]
TRANSIENT_IDS = ["503", "429-without-via", "connection-cut"]


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def adapter(fake: FakeDiscord, sink: RecordingSink) -> AsyncIterator[DiscordAdapter]:
    # A long edit interval: the only edit after the first text is the final one.
    async with adapter_on(fake, sink, edit_interval_s=60.0) as adapter:
        yield adapter


def shown(fake: FakeDiscord, question: Json) -> list[str]:
    return [m["content"] for m in fake.replies_to(question)]


@pytest.mark.parametrize(("status", "body"), TRANSIENT, ids=TRANSIENT_IDS)
async def test_a_failed_final_edit_is_retried(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter, status: int, body: Json
) -> None:
    incoming = await asked(fake, sink)
    question = fake.messages[int(incoming.message_id)]
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.update("the first words")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first text")
    fake.fail_next("PATCH", ONE_MESSAGE, status, body, times=3)
    await reply.finish("the first words and the rest")
    await asyncio.wait_for(reply.done.wait(), 10)
    assert shown(fake, question) == ["the first words and the rest"]
    assert [c.status for c in fake.calls_to("PATCH", ONE_MESSAGE)] == [status] * 3 + [200]


async def test_a_failed_final_send_is_retried(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    """A short answer's first and final text is one send."""
    incoming = await asked(fake, sink)
    fake.fail_next("POST", MESSAGES, *SERVER_ERROR, times=2)
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.finish("a short answer")
    await asyncio.wait_for(reply.done.wait(), 10)
    assert shown(fake, fake.messages[int(incoming.message_id)]) == ["a short answer"]
    assert [c.status for c in fake.calls_to("POST", MESSAGES)] == [503, 503, 200]


async def test_retrying_ends_and_does_not_hold_up_the_core(
    fake: FakeDiscord,
    sink: RecordingSink,
    adapter: DiscordAdapter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Discord failing for good: `finish` returns after one try (the core's worker goes on
    to the next answer), the retries back off and stop after FINAL_TRIES, nothing raised."""
    monkeypatch.setattr(discord_reply, "FINAL_TRIES", 4)
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.update("the first words")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first text")
    fake.fail_next("PATCH", ONE_MESSAGE, *SERVER_ERROR, times=1000)
    await reply.finish("never shown")
    assert len(fake.calls_to("PATCH", ONE_MESSAGE)) == 1
    assert not reply.done.is_set()
    await asyncio.wait_for(reply.done.wait(), 30)
    tries = fake.calls_to("PATCH", ONE_MESSAGE)
    assert len(tries) == discord_reply.FINAL_TRIES
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    first = adapter.retry_s
    assert all(gap >= 0.9 * first * 2**i for i, gap in enumerate(gaps)), gaps  # backing off


async def test_a_stored_answer_reaches_the_channel_after_failed_final_edits(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """The whole daemon: the answer is committed, its final edit fails three times with
    503, and the channel still ends up showing exactly the stored answer, once."""
    async with hearthbot(tmp_path, tiny_model, fake, edit_interval_s=60.0) as (daemon, _adapter):
        # The only edit is the final one (the first text is a send).
        fake.fail_next("PATCH", ONE_MESSAGE, *SERVER_ERROR, times=3)
        question = await fake.say(fake.alice, fake.general, f"{at(fake)} tell me")
        await until(
            lambda: [c.status for c in fake.calls_to("PATCH", ONE_MESSAGE)] == [503] * 3 + [200],
            what="the final edit, retried",
        )
        final = await answer(fake, daemon, question)
        (_, stored) = await daemon.store.history(f"discord:{fake.general['id']}")
        assert final.startswith(stored.text) and final.endswith("40 tokens)")
        assert len(fake.bot_messages(fake.general)) == 1


async def test_no_regenerate_while_the_final_text_is_retried(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    """🔁 while the old answer's final edit waits for its retry would let that retry write
    the old text over the new answer: it counts as still answering, like ⏹ before it."""
    incoming = await asked(fake, sink)
    reply = adapter.open_reply(incoming)
    assert isinstance(reply, MessageReply)
    await reply.update("the first words")
    await until(lambda: bool(fake.calls_to("POST", MESSAGES)), what="the first text")
    fake.fail_next("PATCH", ONE_MESSAGE, *SERVER_ERROR, times=1000)
    await reply.finish("the whole answer")
    (ours,) = fake.replies_to(fake.messages[int(incoming.message_id)])
    await fake.react(fake.alice, ours, "🔁")
    # Handling a reaction on a remembered reply waits for nothing: it is done before this.
    await asked(fake, sink, "something else")
    assert sink.events == []
    fake.faults.clear()  # Discord is back: the retry shows the answer
    await asyncio.wait_for(reply.done.wait(), 10)
    assert fake.messages[int(ours["id"])]["content"] == "the whole answer"
    await fake.react(fake.alice, ours, "🔁")
    await until(lambda: bool(sink.events), what="the regenerate request")
    assert [type(e) for e in sink.events] == [RegenerateRequested]
