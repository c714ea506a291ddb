"""Trigger modes (issue #17): the pure decision (a table), and the daemon end to end with the
real engine, real SQLite and the in-memory platform: which messages each mode answers,
`!trigger` (admin in servers, stored per channel), and bursts in a free-chat channel answered
once, exactly once per message, also across a restart."""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bot import texts
from bot.events import Incoming, MessageDeleted, Outcome
from bot.scopes import trigger_of
from bot.store import ScopeSettings
from bot.triggers import answers, names_any, pick, runs_commands
from support.daemons import DB, answered, ask, daemon_for, make_settings, model_held
from support.progress import until_progressing
from support.recording_adapter import message
from support.stored import message_count, pending_count

# mode, direct, addressed, named, text, keywords → answered
ANSWERS = [
    ("mention", False, True, False, "hi", [], True),
    ("mention", False, False, False, "hi", [], False),
    ("mention", False, False, True, "hearthbot hi", [], False),  # a name is not a mention
    ("mention", True, False, False, "hi", [], True),  # a DM always
    ("all", False, False, False, "anyone here?", [], True),
    ("all", False, True, False, "hi", [], True),
    ("name", False, False, False, "hi all", [], False),
    ("name", False, False, True, "hearthbot, hi", [], True),  # its platform name
    ("name", False, True, False, "hi", [], True),  # a mention still counts
    ("name", False, False, False, "ask Hearth about it", ["hearth"], True),
    ("name", False, False, False, "HEARTH!", ["hearth"], True),
    ("name", False, False, False, "hearthstone is a game", ["hearth"], False),  # whole word
    ("name", False, False, False, "the hearth-keeper", ["keeper"], True),
    ("name", False, False, False, "my hearth", ["", "  "], False),
    ("off", False, True, False, "hi", [], False),
    ("off", False, False, False, "hi", [], False),
    ("off", True, False, False, "hi", [], True),  # DMs always answer
    ("unknown", False, True, False, "hi", [], True),  # as mention
    ("unknown", False, False, False, "hi", [], False),
]


@pytest.mark.parametrize(
    ("mode", "direct", "addressed", "named", "text", "keywords", "expected"), ANSWERS
)
def test_answers(
    mode: str,
    direct: bool,
    addressed: bool,
    named: bool,
    text: str,
    keywords: list[str],
    expected: bool,
) -> None:
    assert answers(mode, direct, addressed, named, text, keywords) is expected


@pytest.mark.parametrize(
    ("mode", "direct", "addressed", "expected"),
    [
        ("mention", False, True, True),
        ("mention", False, False, False),  # another bot's "!help" is not ours
        ("name", False, False, False),
        ("off", False, True, True),  # off still runs commands
        ("off", False, False, False),
        ("all", False, False, True),  # every message there is for the bot
        ("off", True, False, True),
    ],
)
def test_runs_commands(mode: str, direct: bool, addressed: bool, expected: bool) -> None:
    assert runs_commands(mode, is_direct=direct, addressed=addressed) is expected


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        ("hey bot", ["bot"], True),
        ("robot", ["bot"], False),
        ("bots", ["bot"], False),
        ("Mr. Bot.", ["bot"], True),
        ("c++ rocks", ["c++"], True),  # escaped, not a pattern
        ("a.b", ["a+b"], False),
        ("Hearth Bot, hi", ["hearth bot"], True),
        ("", ["bot"], False),
        ("bot", [], False),
    ],
)
def test_names_any(text: str, names: list[str], expected: bool) -> None:
    assert names_any(text, names) is expected


def test_pick_takes_the_most_specific_mode_set() -> None:
    assert pick([None, "all", "off"], "name") == "all"
    assert pick([None, None], "name") == "name"
    assert pick(["bogus", None], "mention") == "mention"  # an unknown stored value is skipped
    assert pick([], "bogus") == "mention"


def test_platform_config_sits_between_stored_scopes_and_bot(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bot={"trigger": "name"}, discord={"trigger": "all"})
    on_discord = dataclasses.replace(message("x"), platform="discord")
    assert trigger_of([ScopeSettings(), ScopeSettings()], on_discord, settings) == "all"
    assert trigger_of([ScopeSettings(trigger="off")], on_discord, settings) == "off"
    assert trigger_of([ScopeSettings()], message("x"), settings) == "name"  # no [test]
    assert make_settings(tmp_path).bot.trigger == "mention"


def answered_messages(db: Path) -> list[str]:
    """The texts of the messages the stored answers name as answered."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT q.text FROM messages a JOIN messages q ON q.id = a.answer_to"
            " WHERE a.role = 'assistant'"
        ).fetchall()
    return sorted(r[0] for r in rows)


def aside(text: str, **kw: Any) -> Incoming:
    """A message in the channel that is not said to the bot (no mention, no reply to it)."""
    return dataclasses.replace(message(text, **kw), addressed=False)


async def test_mention_mode_ignores_what_is_not_said_to_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        assert await daemon.handle(aside("just chatting")) is Outcome.IGNORED
        assert await daemon.handle(aside("!help")) is Outcome.IGNORED  # maybe another bot's
        assert await daemon.handle(aside("")) is Outcome.IGNORED
        assert adapter.replies == []
        assert message_count(tmp_path / DB) == 0  # not stored: nothing kept of others' talk
        assert "when mentioned" in await ask(daemon, adapter, "!trigger")
        assert (await ask(daemon, adapter, "hello")).strip()


async def test_changing_the_trigger_is_for_admins_and_stays(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        assert await ask(daemon, adapter, "!trigger all") == texts.NOT_ADMIN.format(name="trigger")
        assert await daemon.handle(aside("still ignored")) is Outcome.IGNORED
        said = await ask(daemon, adapter, "!trigger all", admin=True)
        assert said == texts.TRIGGER_SET.format(what=texts.TRIGGER_WHAT["all"])
        # Only that channel.
        assert await daemon.handle(aside("elsewhere", channel="c2")) is Outcome.IGNORED
        free = aside("anyone around?")
        assert await daemon.handle(free) is Outcome.ACCEPTED
        assert (await answered(adapter.for_message(free.message_id)[0])).strip()
        # A DM answers everything, whatever is asked of it.
        assert await ask(daemon, adapter, "!trigger off", direct=True) == texts.TRIGGER_DIRECT
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):  # a restart
        assert "every message" in await ask(daemon, adapter, "!trigger")
        assert await daemon.handle(aside("still free chat")) is Outcome.ACCEPTED
        await daemon.wait_idle()


async def test_name_mode_with_and_without_keywords(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model, bot={"trigger": "name"}) as (daemon, adapter):
        assert await daemon.handle(aside("hearth, are you there?")) is Outcome.IGNORED
        named = dataclasses.replace(aside("Hearthbot, are you there?"), named=True)
        assert await daemon.handle(named) is Outcome.ACCEPTED
        assert (await answered(adapter.for_message(named.message_id)[0])).strip()
        assert (await ask(daemon, adapter, "a mention still works")).strip()
    keywords = {"trigger": "name", "keywords": ["hearth", "oracle"]}
    async with daemon_for(tmp_path, tiny_model, bot=keywords) as (daemon, adapter):
        assert await daemon.handle(aside("hearthstone tonight?")) is Outcome.IGNORED
        called = aside("what does the Oracle say?")
        assert await daemon.handle(called) is Outcome.ACCEPTED
        assert (await answered(adapter.for_message(called.message_id)[0])).strip()


async def test_off_mode_runs_commands_only(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model, bot={"trigger": "off"}) as (daemon, adapter):
        assert await daemon.handle(message("are you there?")) is Outcome.IGNORED
        assert await daemon.handle(aside("anyone?")) is Outcome.IGNORED
        assert "commands only" in await ask(daemon, adapter, "!trigger")
        assert "Commands:" in await ask(daemon, adapter, "!help")
        assert (await ask(daemon, adapter, "a DM", channel="dm", direct=True)).strip()
        assert message_count(tmp_path / DB, "test:c1") == 0


async def test_channel_setting_beats_config(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model, bot={"trigger": "all"}) as (daemon, _):
        await daemon.store.update_scope("channel:test:quiet", trigger="off")
        assert await daemon.handle(aside("hi", channel="quiet")) is Outcome.IGNORED
        assert await daemon.handle(aside("hi", channel="loud")) is Outcome.ACCEPTED
        assert await daemon.store.scope_settings(["channel:test:quiet"]) == [
            ScopeSettings(trigger="off")
        ]
        await daemon.wait_idle()


async def test_a_burst_gets_one_answer_that_completes_every_message(
    tmp_path: Path, tiny_model: Path
) -> None:
    free = {"trigger": "all", "burst_max": 4}
    async with daemon_for(tmp_path, tiny_model, bot=free) as (daemon, adapter):
        async with model_held(daemon.backend):
            first = aside("first", author="u1")
            assert await daemon.handle(first) is Outcome.ACCEPTED
            # Taken into a slot (held there by the model), so the burst queues behind it.
            await until_progressing(
                lambda: not daemon.status().queued, lambda: None, 30, "the first answer to start"
            )
            burst = [aside(f"burst {i}", author=f"u{i % 3}") for i in range(6)]
            for msg in burst:
                assert await daemon.handle(msg) is Outcome.ACCEPTED
            # 4 at most per answer: burst 0-3 together, then 4-5.
            assert daemon.status().queued == 2
        await daemon.wait_idle()
        finals = [r for r in adapter.replies if r.final is not None]
        assert sorted(r.message.text for r in finals) == ["burst 3", "burst 5", "first"]
        assert pending_count(tmp_path / DB) == 0
        history = await daemon.store.history("test:c1")
        assert [m.text for m in history if m.role == "user"] == [
            "first",
            *(f"burst {i}" for i in range(6)),
        ]
        assert [m.role for m in history].count("assistant") == 3
        assert answered_messages(tmp_path / DB) == ["burst 3", "burst 5", "first"]


async def test_a_burst_is_answered_once_across_a_restart(tmp_path: Path, tiny_model: Path) -> None:
    free = {"trigger": "all", "burst_max": 3}
    async with daemon_for(tmp_path, tiny_model, start=False, bot=free) as (daemon, _adapter):
        for i in range(5):
            assert await daemon.handle(aside(f"said {i}", author=f"u{i}")) is Outcome.ACCEPTED
        assert daemon.status().queued == 2  # 0-2, 3-4
        assert pending_count(tmp_path / DB) == 5
    async with daemon_for(tmp_path, tiny_model, bot=free) as (daemon, adapter):
        await daemon.wait_idle()
        finals = sorted(r.message.text for r in adapter.replies if r.final is not None)
        assert finals == ["said 2", "said 4"]
        assert answered_messages(tmp_path / DB) == ["said 2", "said 4"]
        assert pending_count(tmp_path / DB) == 0
        history = await daemon.store.history("test:c1")
        assert [m.role for m in history].count("assistant") == 2
    async with daemon_for(tmp_path, tiny_model, bot=free) as (daemon, adapter):
        await daemon.wait_idle()
        assert adapter.replies == []  # nothing answered twice


async def test_deleting_a_message_of_a_queued_burst_keeps_the_rest(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model, start=False, bot={"trigger": "all"}) as (
        daemon,
        _adapter,
    ):
        burst = [aside(f"part {i}", author=f"u{i}") for i in range(3)]
        for msg in burst:
            await daemon.handle(msg)
        assert daemon.status().queued == 1
        await daemon.handle(MessageDeleted("test", "c1", burst[2].message_id))  # the newest
        await daemon.handle(MessageDeleted("test", "c1", burst[0].message_id))
        assert daemon.status().queued == 1
        assert pending_count(tmp_path / DB) == 1
        await daemon.handle(MessageDeleted("test", "c1", burst[1].message_id))
        assert daemon.status().queued == 0
        assert pending_count(tmp_path / DB) == 0


async def test_forgetting_someone_in_a_queued_burst_keeps_the_others(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model, start=False, bot={"trigger": "all"}) as (
        daemon,
        _adapter,
    ):
        for i, who in enumerate(["u1", "u2", "u1"]):
            await daemon.handle(aside(f"part {i}", author=who))
        assert await daemon.handle(aside("!forget", author="u1")) is Outcome.COMMAND
        assert daemon.status().queued == 1  # u2's message, answered alone now
        (left,) = await daemon.store.pending()
        assert left.message.text == "part 1"
        assert daemon.responder.is_answering("test:c1", left.message.message_id)


async def test_a_burst_counts_against_each_senders_rate_limit(
    tmp_path: Path, tiny_model: Path
) -> None:
    limits = {"queue": {"per_user_per_minute": 2}, "bot": {"trigger": "all"}}
    async with daemon_for(tmp_path, tiny_model, start=False, **limits) as (daemon, adapter):
        outcomes = [await daemon.handle(aside(f"spam {i}", author="fast")) for i in range(5)]
        assert outcomes == [Outcome.ACCEPTED] * 2 + [Outcome.REFUSED] * 3
        assert [notice for _, notice in adapter.refusals] == [texts.RATE_LIMITED]  # once
        assert await daemon.handle(aside("hi", author="calm")) is Outcome.ACCEPTED
        assert pending_count(tmp_path / DB) == 3
