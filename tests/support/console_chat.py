"""A console chat driven line by line through the real ConsoleAdapter and the real daemon,
restarts included, for tests/test_interleavings_console.py's property test.

Each daemon life is what `hearthbot chat` is as one process: its own stdin (a real pipe the
test writes lines into, read by the adapter's reader thread) and its own stdout; a restart
stops the daemon and starts a new one on the same database, so lines still unread in the old
pipe are gone with it, as with a process that exits. The adapter is watched, not changed:
what it hands the core, every reply it opens and how each ended, and what it wrote.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from adapters.console import ConsoleAdapter, ConsoleReply
from bot.daemon import Daemon
from bot.events import ChatEvent, Incoming, Outcome, Sink
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.store import Store
from support.daemons import DB, make_settings
from support.interleavings import Shown
from support.persona_files import only_persona
from support.progress import until_progressing, wait_progressing
from support.recording_adapter import RecordedReply

QUIET_S = 60.0  # a run that makes no progress for this long has hung


@dataclass
class Handed:
    """A line the console handed the core, when (in the run's order of events) and with
    what outcome (None: the hand-over was cut short by the daemon stopping)."""

    message: Incoming
    life: int
    seq: int
    outcome: Outcome | None = None


@dataclass
class Life:
    """One daemon life: its console, the pipe the test writes its stdin into, its stdout."""

    number: int
    console: WatchedConsole
    pen: asyncio.WriteTransport  # the pipe's write end: buffers what the pipe cannot take yet
    stdin: TextIO
    screen: io.StringIO
    lines: list[str] = field(default_factory=list)  # written into its stdin, in order


class WatchedReply:
    """The console's own reply, recording how and when it ended (once, if right)."""

    def __init__(self, reply: ConsoleReply, shown: Shown, clock: Iterator[int]) -> None:
        self.reply = reply
        self.shown = shown
        self.clock = clock

    async def typing(self) -> None:
        await self.reply.typing()

    async def update(self, text: str) -> None:
        await self.reply.update(text)
        self.shown.record.updates.append(text)

    async def finish(self, text: str) -> None:
        await self.reply.finish(text)
        self.shown.ends.append((next(self.clock), "finish", text))

    async def fail(self, notice: str) -> None:
        await self.reply.fail(notice)
        self.shown.ends.append((next(self.clock), "fail", notice))


class WatchedConsole(ConsoleAdapter):
    """The ConsoleAdapter as is, watched: what it hands over, each reply and refusal."""

    def __init__(self, chat: ConsoleChat, life: int, stdin: TextIO, stdout: TextIO) -> None:
        super().__init__(stdin, stdout, interactive=False)
        self.chat = chat
        self.life = life

    async def start(self, sink: Sink) -> None:
        async def watched(event: ChatEvent) -> Outcome:
            assert isinstance(event, Incoming)
            handed = Handed(event, self.life, next(self.chat.clock))
            self.chat.handed.append(handed)
            handed.outcome = await sink(event)
            return handed.outcome

        await super().start(watched)

    async def stop(self) -> None:
        # A line typed while the daemon stops reaches it before the console stops reading.
        await self.chat.typed_lines_handed(self.life)
        await super().stop()

    def open_reply(self, message: Incoming) -> WatchedReply:  # type: ignore[override]
        shown = Shown(RecordedReply(message))
        self.chat.shown.append((self.life, shown))
        return WatchedReply(super().open_reply(message), shown, self.chat.clock)

    async def refuse(self, message: Incoming, notice: str) -> None:
        await super().refuse(message, notice)
        self.chat.notices.append((self.life, notice))


class ConsoleChat:
    """One console process after another on the same database, fed lines and restarts."""

    def __init__(self, folder: Path, model: Path) -> None:
        self.folder = folder
        self.model = model
        self.clock = itertools.count()
        self.lives: list[Life] = []
        self.handed: list[Handed] = []
        self.shown: list[tuple[int, Shown]] = []  # (life, reply)
        self.notices: list[tuple[int, str]] = []
        self._markers = (f"zc{n}x" for n in itertools.count(1000))
        # Short answers: a handful of examples run in about a minute.
        persona = only_persona(folder, "short", max_tokens=16)
        self.settings = make_settings(folder, bot=persona)
        self.daemon: Daemon | None = None
        self._typed_while_stopping = False

    @property
    def db(self) -> Path:
        return self.folder / DB

    @property
    def life(self) -> Life:
        return self.lives[-1]

    def question(self) -> str:
        return f"{next(self._markers)} what now"

    async def run(self, steps: list[tuple[object, ...]]) -> None:
        """Every step; then stdin ends, and the last daemon answers what is left and stops
        (as `hearthbot chat` does with piped input)."""
        await self.start()
        try:
            for step in steps:
                await self.act(step)
            self.life.pen.close()  # stdin ends once all typed is read
            await self.progressing(self.life.console.finished.wait(), "stdin read to its end")
            await self.progressing(self._running().wait_idle(), "the last answers")
        finally:
            if self.daemon is not None:
                await self.stop()
            for life in self.lives:
                life.stdin.close()

    async def start(self) -> None:
        read_end, write_end = os.pipe()
        stdin = open(read_end, encoding="utf-8")  # noqa: SIM115  # closed after the run
        pen, _ = await asyncio.get_running_loop().connect_write_pipe(
            asyncio.Protocol,
            open(write_end, "wb", buffering=0),  # noqa: SIM115  # the transport closes it
        )
        screen = io.StringIO()
        console = WatchedConsole(self, len(self.lives) + 1, stdin, screen)
        self.lives.append(Life(console.life, console, pen, stdin, screen))
        engine = await LlamaCppBackend.load(self.model, n_ctx=2048, n_threads=2)
        store = await Store.open(self.db)
        personas = load_personas(self.settings.bot.personas_dir)
        self.daemon = Daemon(self.settings, store, engine, personas, {"console": console})  # type: ignore[dict-item]
        await self.daemon.start()

    async def stop(self, grace: float | None = None, during: str | None = None) -> None:
        """Stop the daemon; `during`: a line typed while it is stopping."""
        daemon = self._running()
        stopping = asyncio.ensure_future(daemon.stop(grace))
        await asyncio.sleep(0)  # stop() has begun
        if during is not None:
            self._typed_while_stopping = True
            self.say(during)
        try:
            await stopping
        finally:
            self._typed_while_stopping = False
        await daemon.store.close()
        await daemon.backend.close()
        self.daemon = None
        if not self.life.pen.is_closing():
            self.life.pen.abort()  # the process is gone, and what it had not read with it

    def _running(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    def say(self, line: str) -> None:
        """Type a line into the console (read when the console gets to it)."""
        self.life.lines.append(line)
        self.life.pen.write((line + "\n").encode())

    async def act(self, step: tuple[object, ...]) -> None:
        kind, *args = step
        if kind == "ask":
            self.say(self.question())
        elif kind == "say":
            self.say(str(args[0]))
        elif kind == "too long":
            self.say(f"{next(self._markers)} " + "long " * 4000)  # over max_message_chars(2048)
        elif kind == "restart":
            at_once, during = args
            line = None if during is None else self.question() if during == "ask" else str(during)
            await self.stop(grace=0 if at_once else None, during=line)
            await self.start()
        elif kind == "wait":
            await self.wait(str(args[0]))
        else:
            raise ValueError(kind)

    async def wait(self, what: str) -> None:
        daemon = self._running()
        if what == "idle":
            await self.progressing(daemon.wait_idle(), "idle")
        elif what == "handed":
            await self.all_handed(self.life.number)
        else:  # until something new is shown, or nothing is left to show
            before = self.progress()
            await until_progressing(
                lambda: (
                    self.progress() != before
                    or not (daemon.status().queued or daemon.status().answering)
                ),
                self.progress,
                QUIET_S,
                "an answer to show",
            )

    async def typed_lines_handed(self, life: int) -> None:
        """While the daemon stops with a line typed meanwhile: until every line typed into
        this life's console has been handed over."""
        if self._typed_while_stopping:
            await self.all_handed(life)

    async def all_handed(self, life: int) -> None:
        """Until every line typed into life `life`'s console has been handed to the core."""
        typed = sum(1 for line in self.lives[life - 1].lines if line.strip())
        await until_progressing(
            lambda: sum(1 for h in self.handed if h.life == life) >= typed,
            self.progress,
            QUIET_S,
            "the lines typed handed over",
        )

    def progress(self) -> object:
        shown = sum(len(s.record.updates) + len(s.ends) for _, s in self.shown)
        return (len(self.handed), shown, len(self.notices))

    async def progressing(self, done: Awaitable[object], what: str) -> None:
        await wait_progressing(done, self.progress, QUIET_S, what)
