"""Notes by consent (`!remember`, `!notes`, issue #18): kept per person and scope, shown to the
model just before their author's latest turn, deleted by `!notes clear` and `!forget`. Through
the store, and through the console with the real daemon and the tiny model."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from bot import texts
from bot.daemon import Daemon
from bot.events import Incoming
from bot.notes import notes_scope
from bot.personas import load_personas, parse_persona
from bot.settings import load_settings
from bot.store import Store
from support.daemons import DB, ask, daemon_for
from support.progress import wait_progressing
from support.recording_backend import RecordingBackend
from support.stored import everything_stored

QUIET_S = 120


def incoming(server: str | None = None, direct: bool = False, channel: str = "c1") -> Incoming:
    return Incoming("discord", channel, "m1", "u1", "Ann", "hi", direct, server_id=server)


@pytest.mark.parametrize(
    ("message", "scope"),
    [
        (incoming(server="g1"), "server:discord:g1"),  # every channel of the server
        (incoming(server="g1", channel="c2"), "server:discord:g1"),
        (incoming(direct=True, channel="dm9"), "channel:discord:dm9"),
        (incoming(channel="!room:hs"), "channel:discord:!room:hs"),  # a Matrix room
    ],
)
def test_notes_scope(message: Incoming, scope: str) -> None:
    assert notes_scope(message) == scope


def test_a_persona_may_turn_memory_off() -> None:
    persona = parse_persona('system_prompt = "x"\nmemory = false\n', "t.toml", "t")
    assert persona.memory is False
    assert parse_persona('system_prompt = "x"\n', "t.toml", "t").memory is True
    assert "memory" not in persona.sampling().model_dump()


async def test_notes_are_per_person_and_scope_capped_and_forgotten(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    try:
        assert await store.add_note("ann", "server:g", "likes tea", most=2) == 1
        assert await store.add_note("ann", "server:g", "lives by the sea", most=2) == 2
        assert await store.add_note("ann", "server:g", "one too many", most=2) is None
        assert await store.add_note("ann", "channel:dm", "in the DM", most=2) == 1
        assert await store.add_note("bob", "server:g", "bob's own", most=2) == 1
        assert [n.text for n in await store.notes("ann", "server:g")] == [
            "likes tea",
            "lives by the sea",
        ]
        # Retention purges history, not notes: they stay until their author deletes them
        # (docs/memory.md).
        await store.purge(before=time.time() + 1)
        assert len(await store.notes("ann", "server:g")) == 2
        assert await store.clear_notes("ann", "server:g") == 2
        assert await store.notes("ann", "server:g") == []
        assert [n.text for n in await store.notes("ann", "channel:dm")] == ["in the DM"]
        await store.forget_user("ann")
        assert await store.notes("ann", "channel:dm") == []
        assert [n.text for n in await store.notes("bob", "server:g")] == ["bob's own"]
    finally:
        await store.close()
    stored = everything_stored(tmp_path / "db.sqlite")
    assert "bob's own" in stored
    assert not {"likes tea", "sea", "too many", "in the DM"} & set(stored.split("\n"))


async def test_notes_through_the_console(tmp_path: Path, tiny_model: Path) -> None:
    lines = [
        "!remember my cat is called Biscuit",
        "!notes",
        "what is my cat called?",
        "tell me more",
        "!status",
        "!notes clear",
        "and now?",
        "!remember x" + "y" * 400,  # longer than note_max_chars
        "!remember I live in Zanzibar",
        "!forget",
        "!notes",
    ]
    stdin = io.StringIO("\n".join(lines) + "\n")
    stdout = io.StringIO()
    settings = load_settings(None, bot={"data_dir": tmp_path})
    engine = await RecordingBackend.load(tiny_model, n_ctx=2048, n_threads=2)
    store = await Store.open(tmp_path / "db.sqlite")
    console = ConsoleAdapter(stdin, stdout, interactive=False)
    daemon = Daemon(settings, store, engine, load_personas(), {"console": console})  # type: ignore[dict-item]
    try:
        await daemon.start()
        await wait_progressing(
            console.finished.wait(), lambda: len(stdout.getvalue()), QUIET_S, "the script"
        )
        await daemon.wait_idle()
        cache = engine.cache_state("console:local")
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
    out = stdout.getvalue()
    assert "Noted. I'll keep it in mind when you talk to me here (1 of 10 notes)." in out
    assert "1. my cat is called Biscuit" in out
    assert "Notes: 1 of yours apply here" in out
    assert "Deleted your 1 notes here." in out
    assert "That note is too long (401 characters; at most 300)." in out
    assert out.rstrip().endswith("I keep no notes about you here. Add one with !remember <text>.")

    first, second, after_clear = (g.request.messages for g in engine.generations)
    note = "(Notes you asked me to keep about them:)\n- my cat is called Biscuit\n\n"
    # Just before the speaker's latest turn, and nowhere else: not in the system prompt.
    assert first[-1]["content"] == note + "what is my cat called?"
    assert second[-1]["content"] == note + "tell me more"
    assert all("Biscuit" not in m["content"] for m in first[:-1] + second[:-1])
    assert [m["content"] for m in second[:-2]] == [first[0]["content"], "what is my cat called?"]
    # Only the last turn changed: the prefix before it was reused from the KV cache.
    assert engine.generations[1].result.reused_tokens > 0
    assert all("Biscuit" not in m["content"] for m in after_clear)
    assert engine.generations[2].result.reused_tokens == 0  # `!notes clear` dropped the cache
    # `!forget` took the notes with the messages, from the database and the model's cache.
    stored = everything_stored(tmp_path / "db.sqlite")
    assert "Zanzibar" not in stored and "Biscuit" not in stored
    assert cache == "cold"


async def test_a_persona_without_memory_keeps_no_notes(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "plain.toml").write_text('system_prompt = "You are a test."\nmemory = false\n')
    bot = {"personas_dir": folder, "default_persona": "plain"}
    async with daemon_for(tmp_path, tiny_model, bot=bot) as (daemon, adapter):
        assert await ask(daemon, adapter, "!remember I like tea") == texts.NOTES_OFF
        assert "Notes: off here" in await ask(daemon, adapter, "!status")
    assert "I like tea" not in everything_stored(tmp_path / DB)
