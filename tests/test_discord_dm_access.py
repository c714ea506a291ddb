"""DMs under `allowed_guilds`: answered only for members of an allowed server (or users the
config names), membership asked of Discord one member at a time and remembered for a while,
so no privileged intent is needed. Against the fake Discord, which serves GET
/guilds/{id}/members/{user} and knows who is not in its guild."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.membership import Remembered
from bot.events import Incoming, MessageEdited
from bot.texts import COMMAND_NOT_ALLOWED
from support.discord_bot import answer, hearthbot, nothing_happens
from support.fake_discord import FakeDiscord, Json, RecordingSink, adapter_on, until

MEMBER = r"/guilds/\d+/members/\d+"


def lookups(fake: FakeDiscord, user: Json) -> int:
    return len(fake.calls_to("GET", rf"/guilds/{fake.guild_id}/members/{user['id']}"))


async def test_a_dm_is_answered_only_for_a_member_of_an_allowed_server(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    # Mallory shares a server with the bot, but not the allowed one.
    mallory = fake.add_user("mallory", member=False)
    async with hearthbot(tmp_path, tiny_model, fake, allowed_guilds=[fake.guild_id]) as (
        daemon,
        _adapter,
    ):
        await fake.say(mallory, fake.dm_channel(mallory), "answer me in private")
        await nothing_happens(fake, daemon)
        asked = await fake.say(fake.alice, fake.dm_channel(fake.alice), "hello, just us")
        assert await answer(fake, daemon, asked)
        assert (lookups(fake, mallory), lookups(fake, fake.alice)) == (1, 1)
        # Asked once, remembered: a second DM of each makes no new lookup.
        await fake.say(mallory, fake.dm_channel(mallory), "and now?")
        again = await fake.say(fake.alice, fake.dm_channel(fake.alice), "one more")
        assert await answer(fake, daemon, again)
        assert (lookups(fake, mallory), lookups(fake, fake.alice)) == (1, 1)
        assert await daemon.store.history(f"discord:{fake.dm_channel(mallory)['id']}") == []


@pytest.fixture
async def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def adapter(fake: FakeDiscord, sink: RecordingSink) -> AsyncIterator[DiscordAdapter]:
    async with adapter_on(
        fake, sink, allowed_guilds=[fake.guild_id], admins=[int(fake.admin["id"])]
    ) as adapter:
        yield adapter


async def test_slash_commands_and_edits_in_a_dm_need_membership_too(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    mallory = fake.add_user("mallory", member=False)
    dm = fake.dm_channel(mallory)
    interaction = await fake.slash(mallory, dm, "status")
    await until(lambda: bool(fake.responses(interaction)), what="the refusal")
    assert fake.responses(interaction)[0]["data"]["content"] == COMMAND_NOT_ALLOWED
    # An edit of a DM (sent before the bot was restricted) is not passed on either. Its
    # check needs no request now (the refusal above is remembered), so it is done before
    # the member's DM, which is looked up, reaches the sink.
    old = fake._message(dm, mallory, "old words")
    await fake.user_edit(old, "new words")
    ours = await fake.say(fake.alice, fake.dm_channel(fake.alice), "a member's DM")
    await until(lambda: bool(sink.events), what="the member's DM")
    assert [type(e) for e in sink.events] == [Incoming]
    assert sink.events[0].message_id == ours["id"]
    assert not any(isinstance(e, MessageEdited) for e in sink.events)


async def test_a_listed_user_is_not_looked_up(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    await fake.say(fake.admin, fake.dm_channel(fake.admin), "an admin's DM")
    await until(lambda: bool(sink.events), what="the admin's DM")
    assert fake.calls_to("GET", MEMBER) == []


async def test_a_failed_lookup_is_not_remembered(
    fake: FakeDiscord, sink: RecordingSink, adapter: DiscordAdapter
) -> None:
    """Discord cannot say (503): the DM is not answered, and the next one asks again."""
    fake.fail_next("GET", MEMBER, 503, {"message": "Service Unavailable", "code": 0})
    dm = fake.dm_channel(fake.alice)
    await fake.say(fake.alice, dm, "during the outage")
    await until(lambda: bool(fake.calls_to("GET", MEMBER)), what="the lookup")
    later = await fake.say(fake.alice, dm, "after it")
    await until(lambda: bool(sink.events), what="the later DM")
    assert [e.message_id for e in sink.events] == [later["id"]]
    assert [c.status for c in fake.calls_to("GET", MEMBER)] == [503, 200]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_remembered_answers_expire() -> None:
    clock = Clock()
    known = Remembered(ttl_s=10.0, size=100, clock=clock)
    known.put((1, 100), True)
    known.put((1, 200), False)
    assert (known.get((1, 100)), known.get((1, 200)), known.get((1, 300))) == (True, False, None)
    clock.now = 9.9
    assert known.get((1, 100)) is True
    clock.now = 10.0  # expired: Discord is asked again
    assert known.get((1, 100)) is None
    assert len(known) == 1  # dropped when found expired


def test_remembered_answers_stay_bounded() -> None:
    known = Remembered(ttl_s=100.0, size=2, clock=Clock())
    known.put((1, 100), True)
    known.put((1, 200), True)
    assert known.get((1, 100)) is True  # used last: kept when a third comes
    known.put((1, 300), False)
    assert len(known) == 2
    assert (known.get((1, 100)), known.get((1, 200)), known.get((1, 300))) == (True, None, False)
