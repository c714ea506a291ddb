"""Rolling summaries (issue #18): what left a channel's window, summarized in idle time, placed
after the system prompt, and gone with any message it covers. Through the store, and through
the console with the real daemon and the tiny model (which writes gibberish: these tests check
the mechanics, not the summaries' quality)."""

from __future__ import annotations

import asyncio
import inspect
import io
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from bot.daemon import Daemon
from bot.events import Incoming
from bot.live import Live
from bot.model.types import Generation, GenerationRequest
from bot.personas import load_personas
from bot.prompt.window import choose_window, doomed
from bot.settings import load_settings
from bot.store import Store
from bot.summaries import Summary
from bot.summarizer import Summarizer, SummaryRun
from support.persona_files import only_persona
from support.recording_backend import RecordingBackend
from support.stored import everything_stored

WAIT_S = 120
CHANNEL = "console:local"


def incoming(i: int, author: str = "ann", channel: str = "c") -> Incoming:
    return Incoming("test", channel, f"m{i}", author, author.title(), f"words {i}")


@pytest.mark.parametrize(
    ("costs", "budget", "start", "expected"),
    [
        ([10, 10, 10], 100, 0, None),  # far from full: a trim keeps everything
        # 105 > 66 (what a trim keeps): turns 0 and 1 go, the last 65 tokens stay
        ([20, 20, 30, 30, 5], 100, 0, 1),
        ([20, 20, 30, 30, 5], 100, 1, 1),  # the window already opens at 1
        ([20, 20, 30, 30, 5], 100, 2, None),
        ([100, 100], 100, 0, 0),  # never the message being answered
        ([], 100, 0, None),
    ],
)
def test_doomed_turns(costs: list[int], budget: int, start: int, expected: int | None) -> None:
    assert doomed(costs, budget, start) == expected
    if expected is not None:  # and a trim whenever it comes drops them (turns only add)
        window = choose_window([*costs, budget], [True] * (len(costs) + 1), budget, start)
        assert window is not None and window.start > expected


async def store_with_trimmed(tmp_path: Path) -> tuple[Store, list[int]]:
    """A store with six messages in test:c, the first four out of the window."""
    store = await Store.open(tmp_path / "db.sqlite")
    rows = []
    for i in range(6):
        row = await store.accept(incoming(i, "ann" if i % 2 else "bob"), f"words {i}")
        assert row is not None
        await store.complete(row, "test:c", "")
        rows.append(row)
    await store.set_window_start("test:c", rows[4])
    return store, rows


async def test_a_channel_whose_summary_fails_does_not_starve_the_others(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Channel a's summary so far no longer fits the context (written with a bigger one before
    a restart, say): its runs fail. The next run goes to channel b, not to a again."""
    store = await Store.open(tmp_path / "db.sqlite")
    engine = await RecordingBackend.load(tiny_model, n_ctx=512, n_threads=2)
    try:
        for channel in ("a", "b"):
            rows = []
            for i in range(6):
                message = Incoming("test", channel, f"{channel}{i}", "ann", "Ann", f"words {i}")
                row = await store.accept(message, message.text)
                assert row is not None
                await store.complete(row, f"test:{channel}", "")
                rows.append(row)
            await store.set_window_start(f"test:{channel}", rows[4])
        first_of_a = (await store.trimmed("test:a", 0, 1))[0]
        assert await store.save_summary("test:a", "gist " * 2000, 2000, None, [first_of_a])
        settings = load_settings(None, bot={"data_dir": tmp_path}, memory={"summary_tokens": 64})
        summarizer = Summarizer(Live(settings, load_personas(), {}), store, engine)
        for channel in ("a", "b"):
            summarizer.saw(Incoming("test", channel, f"{channel}5", "ann", "Ann", "words 5"))

        with pytest.raises(ValueError, match="no room"):
            await summarizer.run(SummaryRun())
        assert await summarizer.run(SummaryRun())  # b's turn, not a's again
        assert await store.summary("test:b") is not None
    finally:
        await engine.close()
        await store.close()


async def test_trimmed_messages_are_found_and_summarized_once(tmp_path: Path) -> None:
    store, rows = await store_with_trimmed(tmp_path)
    try:
        assert await store.unsummarized(["test:c", "test:other"]) == ["test:c"]
        trimmed = await store.trimmed("test:c", 0, 3)
        assert [m.row for m in trimmed] == rows[:3]
        assert await store.save_summary("test:c", "gist one", 2, None, trimmed)
        assert await store.unsummarized(["test:c"]) == ["test:c"]  # row 4 is left
        first = await store.summary("test:c")
        assert first == Summary("gist one", rows[2], 2)
        rest = await store.trimmed("test:c", first.through_row, 10)
        assert [m.row for m in rest] == [rows[3]]
        # Built on a summary that is not the one stored any more: not saved.
        assert not await store.save_summary("test:c", "stale", 1, None, rest)
        assert await store.save_summary("test:c", "gist two", 2, first, rest)
        assert await store.unsummarized(["test:c"]) == []
    finally:
        await store.close()


async def test_a_summary_goes_with_any_message_it_covers(tmp_path: Path) -> None:
    ways: dict[str, Callable[[Store], Awaitable[object]]] = {
        "forget": lambda s: s.forget_user("test:bob"),
        "delete": lambda s: s.delete_message("test", "m0"),
        "edit": lambda s: s.edit_message("test", "m1", "test:ann", "new words"),
        "purge": lambda s: s.purge(before=time.time() + 1),
        "reset": lambda s: s.reset_channel("test:c"),
    }
    for name, way in ways.items():
        folder = tmp_path / name
        folder.mkdir()
        store, _ = await store_with_trimmed(folder)
        try:
            trimmed = await store.trimmed("test:c", 0, 10)
            assert await store.save_summary("test:c", "Quetzalcoatl said", 3, None, trimmed)
            await way(store)
            assert await store.summary("test:c") is None, name
        finally:
            await store.close()
        assert "Quetzalcoatl" not in everything_stored(folder / "db.sqlite"), name
    # A message outside what the summary covers leaves it alone.
    store, _ = await store_with_trimmed(tmp_path)
    try:
        trimmed = await store.trimmed("test:c", 0, 2)
        assert await store.save_summary("test:c", "gist", 1, None, trimmed)
        await store.delete_message("test", "m5")
        assert await store.summary("test:c") is not None
    finally:
        await store.close()


async def test_a_summary_of_words_deleted_meanwhile_is_not_saved(tmp_path: Path) -> None:
    store, _ = await store_with_trimmed(tmp_path)
    try:
        trimmed = await store.trimmed("test:c", 0, 10)
        await store.delete_message("test", "m1")  # while the model was writing the summary
        assert not await store.save_summary("test:c", "gist", 1, None, trimmed)
        edited = await store.trimmed("test:c", 0, 10)
        await store.edit_message("test", "m3", "test:ann", "other words")
        assert not await store.save_summary("test:c", "gist", 1, None, edited)
        assert await store.summary("test:c") is None
    finally:
        await store.close()


class SummaryWatchingBackend(RecordingBackend):
    """The recording engine, telling when a summary run starts."""

    def __init__(self) -> None:
        super().__init__()
        self.summary_started = asyncio.Event()

    def start(self, request: GenerationRequest) -> Generation:
        generation = super().start(request)
        if (request.cache_key or "").startswith("summary:"):
            self.summary_started.set()
        return generation

    def answers(self) -> list[Generation]:
        return [g for g in self.generations if g.request.cache_key == CHANNEL]

    def summaries(self) -> list[Generation]:
        return [g for g in self.generations if (g.request.cache_key or "").startswith("summary:")]

    def held_text(self) -> str:
        """Everything the KV cache holds: resident sequences and saved snapshots."""
        sequences = [r.tokens for r in self._pool.residents if not r.forgotten]
        sequences += [list(s.tokens) for s in self._cache._items.values()]
        detokenize = self._text._llm.detokenize
        return "\n".join(detokenize(t, special=True).decode(errors="replace") for t in sequences)


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await _holds(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], Awaitable[bool] | bool]) -> bool:
    result = condition()
    return bool(await result if inspect.isawaitable(result) else result)


async def test_summaries_through_the_console(tmp_path: Path, tiny_model: Path) -> None:
    """The console on a pipe: the test writes each line when it wants to."""
    read_end, write_end = os.pipe()
    stdin = open(read_end, encoding="utf-8")  # noqa: SIM115  # closed below
    stdout = io.StringIO()
    bot = only_persona(tmp_path, "brief", max_tokens=16, temperature=0.0)
    settings = load_settings(
        None, bot={"data_dir": tmp_path, **bot}, memory={"summary_tokens": 300}
    )
    engine = await SummaryWatchingBackend.load(tiny_model, n_ctx=1024, n_threads=2, kv_cache_mb=16)
    store = await Store.open(tmp_path / "db.sqlite")
    console = ConsoleAdapter(stdin, stdout, interactive=False)
    daemon = Daemon(
        settings, store, engine, load_personas(bot["personas_dir"]), {"console": console}
    )  # type: ignore[dict-item]

    async def say(line: str) -> None:
        """Send a line and wait for its answer (or command's reply) and the daemon's idle."""
        before = len(stdout.getvalue())
        os.write(write_end, (line + "\n").encode())
        await until(lambda: len(stdout.getvalue()) > before, f"an answer to {line!r}")
        await asyncio.wait_for(daemon.wait_idle(), WAIT_S)

    async def trimmed() -> bool:
        return bool(await store.trimmed(CHANNEL, 0, 1))

    async def summarized() -> bool:
        return await store.summary(CHANNEL) is not None

    try:
        await daemon.start()
        i = 0
        while not await trimmed():
            engine.summary_started.clear()
            await say(f"message {i}: the Quetzalcoatl water is cold and the fire is warm " * 3)
            i += 1
        # A summary starts in idle time; a message that arrives pre-empts it.
        await asyncio.wait_for(engine.summary_started.wait(), WAIT_S)
        (stopped,) = engine.summaries()
        await say("a question while the summary is written")
        assert stopped.result.finish == "cancelled"
        assert await store.summary(CHANNEL) is None or len(engine.summaries()) > 1
        # ... and it is written again once nothing waits.
        await until(summarized, "the summary")
        written = await store.summary(CHANNEL)
        assert written is not None and 0 < written.tokens <= 300
        # Written ahead, from the turns the next trim drops; shown from that trim on.
        while (await store.summary(CHANNEL) or written).shown is None:
            await say(f"message {i}: the Quetzalcoatl water is cold and the fire is warm " * 3)
            i += 1
        summary = await store.summary(CHANNEL)
        assert summary is not None and summary.shown
        await say("!summary")
        assert "Summary of what left my context here" in stdout.getvalue()
        await say("!status")
        assert f"Summary: in use, {summary.shown_tokens:,} / 300 tokens" in stdout.getvalue()
        # The next prompts have it right after the system prompt, and reuse their prefix:
        # the summary they show changes at trim points only.
        for j in range(4):
            await say(f"after the summary {j}")
        answers = engine.answers()
        shown = [g for g in answers if "(a summary):\n" in g.request.messages[0]["content"]]
        assert len(shown) >= 4
        assert shown[0].request.messages[0]["content"].endswith(summary.shown)
        between_trims = 0
        for previous, current in itertools.pairwise(answers):
            if previous.request.messages[:2] == current.request.messages[:2]:
                assert current.result.reused_tokens >= len(previous.request.prompt or ()) - 1
                between_trims += previous in shown
            else:  # a trim point: the window's first turn and the summary change together
                assert previous.request.messages[1] != current.request.messages[1]
        assert between_trims >= 3

        # !forget: every message of the console's user goes, and the summary with them, at
        # once; no row, summary or cached KV state keeps their words.
        assert "Quetzalcoatl" in engine.held_text()  # the channel's cached state had them
        await say("!forget")
        assert await store.summary(CHANNEL) is None
        await say("one more after forgetting")
        assert "Quetzalcoatl" not in everything_stored(tmp_path / "db.sqlite")
        assert "Quetzalcoatl" not in engine.held_text()
    finally:
        os.close(write_end)
        await daemon.stop()
        await store.close()
        await engine.close()
        stdin.close()


@pytest.mark.parametrize("off_by", ["persona", "summary_tokens"])
async def test_summaries_turned_off_are_never_written(
    tmp_path: Path, tiny_model: Path, off_by: str
) -> None:
    """A persona with `memory = false`, or `[memory] summary_tokens = 0`: the window trims, and
    no summary is started, stored or shown."""
    from support.daemons import ask, daemon_for

    bot = only_persona(tmp_path, "brief", max_tokens=8, temperature=0.0)
    if off_by == "persona":
        persona = bot["personas_dir"] / "brief.toml"
        persona.write_text(persona.read_text() + "memory = false\n")
    memory = {"summary_tokens": 0 if off_by == "summary_tokens" else 300}
    async with daemon_for(
        tmp_path,
        tiny_model,
        n_ctx=512,
        engine_cls=SummaryWatchingBackend,
        bot=bot,
        memory=memory,
        queue={"per_user_per_minute": 1000},
    ) as (daemon, adapter):
        engine = daemon.backend
        assert isinstance(engine, SummaryWatchingBackend)
        for i in range(8):
            await ask(daemon, adapter, f"message {i}: the water is cold and the fire is warm " * 3)
            await asyncio.wait_for(daemon.wait_idle(), WAIT_S)
        assert await daemon.store.trimmed("test:c1", 0, 1)  # the window did trim
        assert engine.summaries() == []
        assert await ask(daemon, adapter, "!summary") == "Summaries are off here."
        assert "Summary: off here" in await ask(daemon, adapter, "!status")
