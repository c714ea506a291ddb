"""When the summarizer asks the store for channels to summarize: only when one may have some
(an answer's prompt moved its window or read messages waiting, a run was stopped or saved, a
deletion took a summary), never after every answer; and then it still finds them. Through
the daemon with the tiny model, and through the summarizer alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.daemon import Daemon
from bot.events import Incoming, MessageDeleted
from bot.live import Live
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store
from bot.summarizer import Summarizer, SummaryRun
from support.daemons import ask, daemon_for
from support.persona_files import only_persona
from support.progress import until_progressing
from support.recording_adapter import message
from support.recording_backend import RecordingBackend

QUIET_S = 120


def count_asks(store: Store, during: Callable[[], None] | None = None) -> list[list[str]]:
    """The channels each call of store.unsummarized asked about; `during` runs inside the
    first call that happens."""
    asked: list[list[str]] = []
    unsummarized = store.unsummarized

    async def counting(channels: Any) -> list[str]:
        asked.append(list(channels))
        if during is not None and len(asked) == 1:
            during()
        return await unsummarized(channels)

    store.unsummarized = counting  # type: ignore[method-assign]
    return asked


async def trimmed_channel(store: Store, channel: str) -> list[Incoming]:
    """Six messages in `channel`, answered, the first four out of its window."""
    messages, rows = [], []
    for i in range(6):
        sent = message(f"words {i} about the cold water", channel=channel)
        row = await store.accept(sent, sent.text)
        assert row is not None
        await store.complete(row, sent.channel_key, "")
        messages.append(sent)
        rows.append(row)
    await store.set_window_start(messages[0].channel_key, rows[4])
    return messages


async def summaries_done(daemon: Daemon) -> None:
    """Until the answer's slot is free and every summary run it called for has ended."""
    engine = daemon.backend
    assert isinstance(engine, RecordingBackend)
    await daemon.wait_idle()
    await until_progressing(
        lambda: not daemon.responder.summarizing,
        lambda: len(engine.generations),
        QUIET_S,
        "the summary runs to end",
    )


async def test_the_store_is_asked_when_messages_may_wait_and_only_then(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Channel a's messages left its window before this start. Answers in b, which has none
    waiting, never ask the store. a's next answer moves no window, yet its prompt's read says
    messages wait: a is summarized. A deletion then takes that summary, and an answer in b has
    it written again, as it was before the asking was narrowed."""
    bot = only_persona(tmp_path, "brief", max_tokens=8, temperature=0.0)
    async with daemon_for(
        tmp_path,
        tiny_model,
        start=False,
        engine_cls=RecordingBackend,
        bot=bot,
        memory={"summary_tokens": 64},
        queue={"per_user_per_minute": 1000},
    ) as (daemon, adapter):
        store = daemon.store
        left = await trimmed_channel(store, "a")
        await daemon.start()
        asked = count_asks(store)
        for i in range(3):
            await ask(daemon, adapter, f"hello {i}", channel="b")
            await summaries_done(daemon)
        assert asked == []

        await ask(daemon, adapter, "and now in a", channel="a")
        await summaries_done(daemon)
        summary = await store.summary("test:a")
        assert summary is not None and summary.through_row == 4  # the four that left
        assert asked and all(call == ["test:a"] for call in asked)

        asked.clear()
        await daemon.handle(MessageDeleted("test", "a", left[0].message_id))
        assert await store.summary("test:a") is None
        await ask(daemon, adapter, "hello again", channel="b")
        await summaries_done(daemon)
        again = await store.summary("test:a")
        assert again is not None and again.through_row == 4
        assert sorted(asked[0]) == ["test:a", "test:b"]  # every channel, after a deletion


async def test_a_channel_stays_due_until_the_store_finds_nothing_there(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Nothing marked: the store is not asked. A run stopped before it began leaves its
    channel due; a channel marked again while the store is being asked stays due though the
    answer found nothing there; one the store finds nothing in is dropped."""
    store = await Store.open(tmp_path / "db.sqlite")
    engine = await RecordingBackend.load(tiny_model, n_ctx=512, n_threads=2)
    try:
        (*_, last) = await trimmed_channel(store, "a")
        settings = load_settings(None, bot={"data_dir": tmp_path}, memory={"summary_tokens": 64})
        summarizer = Summarizer(Live(settings, load_personas(), {}), store, engine)
        quiet = message("nothing to summarize", channel="b")
        summarizer.saw(quiet, summarizable=False)
        assert not summarizer.due
        asked = count_asks(store, during=lambda: summarizer.saw(quiet, summarizable=True))
        assert await summarizer.next_channel() is None  # never asked
        assert asked == []

        summarizer.saw(quiet, summarizable=True)  # say its window moved: b may have some
        summarizer.saw(last, summarizable=True)
        stopped = SummaryRun()
        stopped.stop()
        assert not await summarizer.run(stopped)  # b answered again while the store was asked
        assert sorted(asked[0]) == ["test:a", "test:b"] and summarizer.due

        assert await summarizer.next_channel() == "test:a"  # a: stopped, so asked again
        assert sorted(asked[1]) == ["test:a", "test:b"]  # b: marked since, so asked again
        assert await summarizer.run(SummaryRun())  # a summarized
        assert asked[2] == ["test:a"]  # b was found with nothing
        assert await summarizer.next_channel() is None  # asked: nothing left in a
        assert not summarizer.due
        assert await summarizer.next_channel() is None
        assert len(asked) == 4  # the last look asked nothing
    finally:
        await engine.close()
        await store.close()
