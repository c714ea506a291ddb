"""The Matrix adapter's pure decisions, as tables: access globs, DM detection, relations,
reply fallbacks, whether a message is addressed to the bot."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.matrix.rules import (
    ReplyTarget,
    addressing,
    channel_id,
    config_warnings,
    edited_event,
    is_direct,
    localpart,
    matches,
    picture,
    picture_text,
    redaction_applies,
    reply_target,
    room_allowed,
    should_answer,
    split_channel,
    strip_reply_fallback,
    thread_root,
    within_window,
)

BOT = "@hearthbot:example.org"
NAMES = ["Hearth Bot"]


@pytest.mark.parametrize(
    ("user", "patterns", "expected"),
    [
        ("@alice:example.org", [], False),  # an empty list allows nobody
        ("@alice:example.org", ["@alice:example.org"], True),
        ("@alice:example.org", ["@*:example.org"], True),
        ("@alice:evil.org", ["@*:example.org"], False),
        ("@alice:example.org.evil.org", ["@*:example.org"], False),
        ("@Alice:example.org", ["@alice:example.org"], False),  # ids are case-sensitive
        ("@bob:example.org", ["@alice:example.org", "@b?b:example.org"], True),
        ("@alice:example.org", ["@[ab]lice:example.org"], True),
    ],
)
def test_matches_globs(user: str, patterns: list[str], expected: bool) -> None:
    assert matches(user, patterns) is expected


@pytest.mark.parametrize(
    ("room", "allowed", "expected"),
    [
        ("!abc:example.org", [], True),  # empty: any room the bot was let into
        ("!abc:example.org", ["!abc:example.org"], True),
        ("!abc:example.org", ["!*:example.org"], True),
        ("!abc:other.org", ["!*:example.org"], False),
    ],
)
def test_room_allowed(room: str, allowed: list[str], expected: bool) -> None:
    assert room_allowed(room, allowed) is expected


@pytest.mark.parametrize(
    ("marked_members", "members", "expected"),
    [
        (None, 2, True),  # just the user and the bot
        (None, 3, False),
        (None, 1, False),
        (2, 2, True),  # marked direct by the inviter
        (2, 3, False),  # then someone else joined: a group room now
        (2, 5, False),
        (2, 1, True),  # the user left: nobody to answer, nothing changes
        (3, 3, True),  # a direct chat started with two bots (or two people)
        (3, 4, False),
    ],
)
def test_is_direct(marked_members: int | None, members: int, expected: bool) -> None:
    assert is_direct(marked_members, members) is expected


@pytest.mark.parametrize(
    ("room", "root"), [("!r:x.org", None), ("!r:x.org", "$root-event_id"), ("!r:x", "$a:b")]
)
def test_channel_ids_round_trip(room: str, root: str | None) -> None:
    channel = channel_id(room, root)
    assert split_channel(channel) == (room, root)
    assert (channel == room) is (root is None)


THREAD = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
EDIT = {"m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}
REPLY = {"m.relates_to": {"m.in_reply_to": {"event_id": "$parent"}}}
THREAD_FALLBACK = {
    "m.relates_to": {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": "$latest"},
    }
}


@pytest.mark.parametrize(
    ("content", "root", "edited", "target"),
    [
        ({}, None, None, None),
        ({"m.relates_to": "junk"}, None, None, None),
        ({"m.relates_to": {"m.in_reply_to": {"event_id": 5}}}, None, None, None),
        (THREAD, "$root", None, None),
        (EDIT, None, "$orig", None),
        (REPLY, None, None, ReplyTarget("$parent", falling_back=False)),
        (THREAD_FALLBACK, "$root", None, ReplyTarget("$latest", falling_back=True)),
    ],
)
def test_relations(
    content: dict[str, Any], root: str | None, edited: str | None, target: ReplyTarget | None
) -> None:
    assert thread_root(content) == root
    assert edited_event(content) == edited
    assert reply_target(content) == target


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("plain text", "plain text"),
        ("> <@a:x> quoted\n\nmy answer", "my answer"),
        ("> <@a:x> line one\n> line two\n\nmy answer\nmore", "my answer\nmore"),
        ("> a quote I typed myself, no blank line\nstill mine", "still mine"),
        ("not > a quote", "not > a quote"),
    ],
)
def test_strip_reply_fallback(body: str, expected: str) -> None:
    assert strip_reply_fallback(body) == expected


MENTIONS_BOT = {"m.mentions": {"user_ids": [BOT]}}
MENTIONS_OTHER = {"m.mentions": {"user_ids": ["@carol:example.org"]}}
MENTIONS_NOBODY: dict[str, Any] = {"m.mentions": {}}
OLD_CLIENT: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("content", "text", "mentioned", "stripped"),
    [
        # Intentional mentions decide alone, whatever the body says.
        (MENTIONS_BOT, "Hearth Bot: hi there", True, "hi there"),
        (MENTIONS_BOT, "hi there", True, "hi there"),
        (MENTIONS_OTHER, "Hearth Bot: hi there", False, "Hearth Bot: hi there"),
        (MENTIONS_NOBODY, "hearthbot what is up", False, "hearthbot what is up"),
        # Older clients: the display name, localpart or MXID in the body.
        (OLD_CLIENT, "Hearth Bot: hi there", True, "hi there"),
        (OLD_CLIENT, "hearth bot, hi", True, "hi"),
        (OLD_CLIENT, "hearthbot hi", True, "hi"),
        (OLD_CLIENT, "@hearthbot:example.org: hi", True, "hi"),
        (OLD_CLIENT, "what does hearthbot think?", True, "what does hearthbot think?"),
        (OLD_CLIENT, "hearthbotany is a word", False, "hearthbotany is a word"),
        (OLD_CLIENT, "myhearthbot", False, "myhearthbot"),
        (OLD_CLIENT, "nobody here", False, "nobody here"),
        (OLD_CLIENT, "hearthbot:", True, ""),
    ],
)
def test_addressing(content: dict[str, Any], text: str, mentioned: bool, stripped: str) -> None:
    result = addressing(content, text, BOT, NAMES)
    assert (result.mentioned, result.text) == (mentioned, stripped)


def test_display_names_with_regex_characters_are_literal() -> None:
    assert addressing({}, "B.o.t (test) hi", BOT, ["B.o.t (test)"]).mentioned
    assert not addressing({}, "BxoXt (test) hi", BOT, ["B.o.t (test)"]).mentioned


@pytest.mark.parametrize(
    ("direct", "mentioned", "reply", "expected"),
    [
        (True, False, False, True),
        (False, False, False, False),
        (False, True, False, True),
        (False, False, True, True),
    ],
)
def test_should_answer(direct: bool, mentioned: bool, reply: bool, expected: bool) -> None:
    assert should_answer(direct, mentioned, reply) is expected


@pytest.mark.parametrize(
    ("age_s", "window_s", "expected"), [(0, 600, True), (599, 600, True), (601, 600, False)]
)
def test_within_window(age_s: float, window_s: float, expected: bool) -> None:
    now = 1_800_000_000.0
    assert within_window(int((now - age_s) * 1000), now, window_s) is expected


@pytest.mark.parametrize(
    ("redactor", "author", "moderates", "applies"),
    [
        ("@alice:hs", "@alice:hs", False, True),  # her own message
        ("@mallory:hs", "@alice:hs", False, False),  # another's: the server refuses it too
        ("@mallory:hs", None, False, False),  # a message the bot cannot place
        ("@mod:hs", "@alice:hs", True, True),  # a moderator removed it from the room
        ("@mod:hs", None, True, True),
        ("@alice:hs", "@bot:hs", False, False),  # the bot's answer, by someone who may not
    ],
)
def test_redaction_applies(
    redactor: str, author: str | None, moderates: bool, applies: bool
) -> None:
    assert redaction_applies(redactor, author, moderates) is applies


def test_localpart() -> None:
    assert localpart("@hearthbot:example.org") == "hearthbot"
    assert localpart("hearthbot") == "hearthbot"


@pytest.mark.parametrize(
    ("users", "homeserver", "warned"),
    [
        ([], None, None),  # Matrix not configured: nothing to say
        ([], "https://hs", "empty"),
        (["*"], "https://hs", "everyone"),
        (["@*:*"], "https://hs", "everyone"),
        (["@*:example.org"], "https://hs", None),
        (["@alice:example.org"], "https://hs", None),
    ],
)
def test_config_warnings(users: list[str], homeserver: str | None, warned: str | None) -> None:
    found = config_warnings(users, homeserver)
    if warned is None:
        assert found == []
    else:
        assert len(found) == 1 and warned in found[0]


def test_hearthbot_messages_are_marked_and_never_answered() -> None:
    from adapters.matrix.format import edit_content, message_content
    from adapters.matrix.rules import sent_by_a_bot

    assert sent_by_a_bot(message_content("an answer", reply_to="$e"))
    assert sent_by_a_bot(edit_content("$original", "a longer answer"))
    assert not sent_by_a_bot({"msgtype": "m.text", "body": "a person typing"})


@pytest.mark.parametrize(
    ("content", "expected", "text"),
    [
        ({"msgtype": "m.text", "body": "cat.png"}, None, None),
        ({"msgtype": "m.image", "body": "cat.png"}, ("cat.png", ""), "[image: cat.png]"),
        (
            {"msgtype": "m.image", "body": "look!", "filename": "cat.png"},
            ("cat.png", "look!"),
            "look!\n[image: cat.png]",
        ),
        (
            {"msgtype": "m.image", "body": "cat.png", "filename": "cat.png"},
            ("cat.png", ""),
            "[image: cat.png]",
        ),
        ({"msgtype": "m.image"}, ("image", ""), "[image: image]"),
        ({"msgtype": "m.image", "body": 7}, ("image", ""), "[image: image]"),
    ],
)
def test_pictures_are_named(
    content: dict[str, Any], expected: tuple[str, str] | None, text: str | None
) -> None:
    assert picture(content) == expected
    if expected is not None:
        assert picture_text(*expected) == text
