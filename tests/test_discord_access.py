"""The Discord adapter's decisions as tables: who is answered, how text is cleaned, how a
slash command becomes a `!` command. Pure functions, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.discord.access import Access, Addressing, addressed, may_steer, reaction_kind
from adapters.discord.slash import matching
from adapters.discord.text import (
    attachment_named,
    attachment_read,
    command_text,
    decode_text,
    is_text_attachment,
    plain_text,
    with_attachments,
    without_footnote,
)
from bot.settings import BotSettings, DiscordSettings

BOT = 10
ALICE, BOB, ADMIN, BLOCKED = 1, 2, 3, 4
GUILD, OTHER_GUILD = 100, 200
GENERAL, RANDOM, THREAD = 1000, 2000, 1001

OPEN = Access()
LOCKED = Access(
    allowed_guilds=frozenset({GUILD}),
    allowed_channels=frozenset({GENERAL}),
    allowed_users=frozenset({ALICE}),
    blocked_users=frozenset({BLOCKED}),
    admins=frozenset({ADMIN}),
    allow_dms=False,
)


@pytest.mark.parametrize(
    ("access", "user", "guild", "channels", "allowed"),
    [
        (OPEN, ALICE, GUILD, (GENERAL,), True),
        (OPEN, BOB, OTHER_GUILD, (RANDOM,), True),
        (OPEN, ALICE, None, (), True),  # DMs on by default
        (Access(blocked_users=frozenset({BLOCKED})), BLOCKED, GUILD, (GENERAL,), False),
        (Access(blocked_users=frozenset({BLOCKED})), BLOCKED, None, (), False),
        (LOCKED, ALICE, GUILD, (GENERAL,), True),
        (LOCKED, ALICE, GUILD, (THREAD, GENERAL), True),  # a thread of an allowed channel
        (LOCKED, ALICE, GUILD, (RANDOM,), False),
        (LOCKED, ALICE, OTHER_GUILD, (GENERAL,), False),
        (LOCKED, BOB, GUILD, (GENERAL,), False),  # not on the allowed users list
        (LOCKED, ADMIN, GUILD, (GENERAL,), True),  # admins are allowed users
        (LOCKED, ALICE, None, (), False),  # allow_dms off
        (LOCKED, BLOCKED, GUILD, (GENERAL,), False),
        (
            Access(admins=frozenset({BLOCKED}), blocked_users=frozenset({BLOCKED})),
            BLOCKED,
            None,
            (),
            False,
        ),
    ],
)
def test_access(
    access: Access, user: int, guild: int | None, channels: tuple[int, ...], allowed: bool
) -> None:
    assert access.allows(user, guild, channels) is allowed


SERVERS_ONLY = Access(allowed_guilds=frozenset({GUILD}), admins=frozenset({ADMIN}))
LISTED = Access(allowed_guilds=frozenset({GUILD}), allowed_users=frozenset({ALICE}))


@pytest.mark.parametrize(
    ("access", "user", "member", "needs", "allowed"),
    [
        # With allowed_guilds a DM needs a member of one of them (sharing another server with
        # the bot, e.g. one an attacker invited it to, is not enough)...
        (SERVERS_ONLY, BOB, False, True, False),
        (SERVERS_ONLY, BOB, True, True, True),
        # ...or someone the config names: no lookup for them.
        (SERVERS_ONLY, ADMIN, False, False, True),
        (LISTED, ALICE, False, False, True),
        (LISTED, BOB, True, False, False),  # not on the allowed users list
        (OPEN, BOB, False, False, True),  # no allowed_guilds: any DM
        (Access(allowed_guilds=frozenset({GUILD}), allow_dms=False), BOB, True, False, False),
        (
            Access(allowed_guilds=frozenset({GUILD}), blocked_users=frozenset({BOB})),
            BOB,
            True,
            False,
            False,
        ),
    ],
)
def test_dm_access_with_allowed_guilds(
    access: Access, user: int, member: bool, needs: bool, allowed: bool
) -> None:
    assert access.needs_membership(user) is needs
    assert access.allows(user, None, (), in_allowed_guild=member) is allowed
    # In a server, membership is a given: the flag changes nothing.
    assert access.allows(user, GUILD, (GENERAL,), in_allowed_guild=member) is (
        access.allows(user, GUILD, (GENERAL,))
    )


def test_access_from_settings_merges_core_admins() -> None:
    discord = DiscordSettings(admins=[7], blocked_users=[9], allowed_channels=[5])
    bot = BotSettings(admins=["discord:8", "matrix:@x:y", "discord:not-a-number"])
    access = Access.from_settings(discord, bot)
    assert access.admins == {7, 8}
    assert access.is_admin(8) and not access.is_admin(9)
    assert access.allowed_channels == {5} and access.blocked_users == {9}


@pytest.mark.parametrize(
    ("facts", "answer"),
    [
        (Addressing(mentions_bot=True), True),
        (Addressing(replies_to_bot=True), True),
        (Addressing(is_dm=True), True),
        (Addressing(), False),  # chatter in a channel, not for us
        (Addressing(is_own=True, mentions_bot=True), False),
        (Addressing(author_is_bot=True, mentions_bot=True), False),  # never loop with a bot
        (Addressing(author_is_bot=True, is_dm=True), False),
        (Addressing(is_webhook=True, mentions_bot=True), False),
        (Addressing(is_system=True, mentions_bot=True), False),
    ],
)
def test_addressed(facts: Addressing, answer: bool) -> None:
    assert addressed(facts) is answer


@pytest.mark.parametrize(
    ("reactor", "author", "steer"),
    [(ALICE, ALICE, True), (BOB, ALICE, False), (ADMIN, ALICE, True), (BLOCKED, BLOCKED, False)],
)
def test_only_the_asker_or_an_admin_steers(reactor: int, author: int, steer: bool) -> None:
    access = Access(admins=frozenset({ADMIN}), blocked_users=frozenset({BLOCKED}))
    assert may_steer(reactor, author, access) is steer


@pytest.mark.parametrize(
    ("emoji", "kind"),
    [("⏹️", "stop"), ("⏹", "stop"), ("🛑", "stop"), ("🔁", "regenerate"), ("👍", None)],
)
def test_reaction_kind(emoji: str, kind: str | None) -> None:
    assert reaction_kind(emoji) == kind


NAMES = {ALICE: "Alice", BOB: "Bob the Builder"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"<@{BOT}> hello", "hello"),
        (f"<@!{BOT}> hello", "hello"),  # the legacy nickname form
        (f"<@{BOT}>, what is 2+2?", "what is 2+2?"),
        (f"<@{BOT}>: !reset", "!reset"),
        (f"<@{BOT}>\nline one\nline two", "line one\nline two"),
        (f"hey <@{BOT}>, what's up", "hey, what's up"),
        (f"thanks <@{BOT}>", "thanks"),
        (f"ask <@{ALICE}> and <@{BOB}>", "ask @Alice and @Bob the Builder"),
        ("who is <@999>?", "who is @unknown-user?"),
        (f"<@&{BOT + 1}> help", "help"),  # the bot's managed role, picked by accident
        ("ping <@&55> in <#66>", "ping @mods in #general"),
        ("nice <:party:12345> <a:spin:678>", "nice :party: :spin:"),
        (f"<@{BOT}>", ""),
        ("keep `<@x>` and <t:1700000000:R>", "keep `<@x>` and <t:1700000000:R>"),
        # A command names people by ID (a display name is anyone's to change).
        (f"<@{BOT}> !forget <@{BOB}>", f"!forget {BOB}"),
        (f"!forget <@!{BOB}>", f"!forget {BOB}"),  # in a DM, the nickname form
        (f"<@&{BOT + 1}> !forget <@{ALICE}>", f"!forget {ALICE}"),
        (f"<@{BOT}> !forget <@{BOT}>", f"!forget {BOT}"),  # not "forget me"
        (f"<@{BOT}> !persona <#66>", "!persona #general"),
        (
            f"<@{BOT}> is <@{BOB}> here? !forget <@{BOB}>",
            "is @Bob the Builder here? !forget @Bob the Builder",
        ),
    ],
)
def test_plain_text(content: str, expected: str) -> None:
    text = plain_text(content, BOT, NAMES, {55: "mods"}, {66: "general"}, bot_role_id=BOT + 1)
    assert text == expected


@pytest.mark.parametrize(
    ("filename", "content_type", "text"),
    [
        ("message.txt", "text/plain; charset=utf-8", True),
        ("notes.md", None, True),
        ("main.PY", "application/octet-stream", True),
        ("data.json", "application/json", True),
        ("photo.png", "image/png", False),
        ("archive.zip", "application/zip", False),
        ("README", None, False),
    ],
)
def test_is_text_attachment(filename: str, content_type: str | None, text: bool) -> None:
    assert is_text_attachment(filename, content_type) is text


def test_attachment_texts() -> None:
    assert attachment_named("cat.png", "image/png", 2048) == "[image: cat.png]"
    assert attachment_named("a.zip", "application/zip", 2048) == (
        "[attachment a.zip: application/zip, 2 KB, not read]"
    )
    assert attachment_named("x", None, 10) == "[attachment x: unknown type, 10 bytes, not read]"
    assert attachment_read("message.txt", "body", None) == "[attachment message.txt]\nbody"
    cut = "bo\n[… cut: 1 KB of attachments read per message]"
    assert attachment_read("a.txt", "bo", 1).endswith(cut)
    assert with_attachments("question", ["A", "B"]) == "question\n\nA\n\nB"
    assert with_attachments("", ["A"]) == "A"
    assert decode_text("héllo".encode()) == "héllo"
    assert decode_text(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert decode_text(b"PNG\x00\x01") is None


@pytest.mark.parametrize(
    ("name", "arg", "text"),
    [
        ("help", None, "!help"),
        ("persona", None, "!persona"),
        ("persona", "coder", "!persona coder"),
        ("persona", "", "!persona"),
        ("temperature", 0.7, "!temperature 0.7"),
        ("temperature", 2.0, "!temperature 2"),
        ("seed", "random", "!seed random"),
        ("forget", 1234, "!forget 1234"),
    ],
)
def test_command_text(name: str, arg: str | float | None, text: str) -> None:
    assert command_text(name, arg) == text


def test_persona_autocomplete_matching() -> None:
    names = ["assistant", "coder", "goofy", "storyteller", "sage"]
    assert matching(names, "") == names
    assert matching(names, "s") == ["storyteller", "sage", "assistant"]
    assert matching(names, "CO") == ["coder"]
    assert matching(names, "zz") == []
    assert len(matching([f"p{i}" for i in range(40)], "p")) == 25


@pytest.mark.parametrize(
    ("shown", "stored"),
    [
        ("answer", "answer"),
        ("answer\n\n⚠️ (reply cut at 40 tokens)", "answer"),
        ("answer\n\n⚠️ (stopped on request; only the last 6 messages fit)", "answer"),
        ("⚠️ (a warning the model wrote) stays", "⚠️ (a warning the model wrote) stays"),
    ],
)
def test_without_footnote(shown: str, stored: str) -> None:
    assert without_footnote(shown) == stored


def test_readme_invite_asks_for_the_minimal_permissions() -> None:
    import discord

    wanted = discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        read_message_history=True,
        add_reactions=True,
    )
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"scope=bot+applications.commands&permissions={wanted.value}" in readme
