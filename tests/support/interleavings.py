"""A chat driven step by step through the real daemon, restarts included, keeping a record of
what was sent and shown, for tests/test_interleavings.py's property test.

Events are delivered as an adapter delivers them: a stop or a regenerate comes only from the
asker or an admin (the adapters check that: tests/test_discord*.py); an edit names its
sender, who may be someone else. Every message carries a unique marker word, so the test can
search the database's files for what must be gone.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot import texts
from bot.daemon import Daemon
from bot.events import (
    ChatEvent,
    Incoming,
    MessageDeleted,
    MessageEdited,
    Outcome,
    RegenerateRequested,
    StopRequested,
)
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.store import Store
from support.daemons import DB, make_settings
from support.persona_files import only_persona
from support.progress import wait_progressing
from support.recording_adapter import RecordedReply, RecordingAdapter

PEOPLE = {"u1": "Alice", "u2": "Bob", "root": "Root"}
ADMIN = "root"
CHANNELS = ("c1", "c2")
QUIET_S = 60.0  # a run that makes no progress for this long has hung
# Steps, as tuples: ("ask", author, channel, quoting: int | None (no quote), while
# restarting: bool),
# ("edit", which: int, by someone else: bool), ("delete", which), ("regenerate", which,
# by the admin: bool), ("stop", which), ("forget", who, whom: str | None), ("restart", at
# once: bool), ("wait", "generating" | "idle"). `which`: see `Chat.pick`.
Step = tuple[object, ...]


@dataclass
class Shown:
    """One reply handle the daemon opened, and every way it was ended (once, if right)."""

    record: RecordedReply
    ends: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, kind, text)


class Platform(RecordingAdapter):
    """The recording adapter, counting a reply's ends instead of asserting on them (the
    daemon would catch the assertion), and timing refusal notices."""

    def __init__(self, clock: Iterator[int]) -> None:
        super().__init__()
        self.clock = clock
        self.shown: list[Shown] = []
        self.notices: list[tuple[int, str, float]] = []  # (daemon life, user, monotonic)
        self.life = 0
        self.showing = asyncio.Event()  # set whenever a reply shows something

    def open_reply(self, message: Incoming) -> EndsCounted:  # type: ignore[override]
        record = RecordedReply(message)
        self.replies.append(record)
        shown = Shown(record)
        self.shown.append(shown)
        return EndsCounted(shown, self)

    async def refuse(self, message: Incoming, notice: str) -> None:
        await super().refuse(message, notice)
        self.notices.append((self.life, message.author_id, time.monotonic()))


class EndsCounted:
    """A reply handle that records how, and in which order, it was ended."""

    def __init__(self, shown: Shown, platform: Platform) -> None:
        self.shown = shown
        self.platform = platform

    async def typing(self) -> None:
        self.shown.record.typing += 1

    async def update(self, text: str) -> None:
        self.shown.record.updates.append(text)
        self.platform.showing.set()

    async def finish(self, text: str) -> None:
        self._end("finish", text)
        self.shown.record.final = text

    async def fail(self, notice: str) -> None:
        self._end("fail", notice)
        self.shown.record.failed = notice

    def _end(self, kind: str, text: str) -> None:
        self.shown.ends.append((next(self.platform.clock), kind, text))
        self.platform.showing.set()


@dataclass
class Sent:
    """A message as the test sent it, and what became of it."""

    message: Incoming
    outcome: Outcome
    versions: list[str]  # its text, then each edit its author made
    gone: bool = False  # deleted or forgotten since
    regenerated: list[int] = field(default_factory=list)  # seq of each applied regenerate
    stops: int = 0  # stops applied

    @property
    def is_command(self) -> bool:
        return self.message.text.startswith("!")


class Chat:
    """One daemon life after another on the same database, fed steps, keeping the record."""

    def __init__(self, folder: Path, model: Path) -> None:
        self.folder = folder
        self.model = model
        self.clock = itertools.count()
        self.platform = Platform(self.clock)
        self.sent: list[Sent] = []
        self.never_stored: list[str] = []  # texts the database must never hold
        self._markers = (f"zq{n}x" for n in itertools.count(1000))
        self._ids = (f"m{n}" for n in itertools.count(1))
        persona = only_persona(folder, "short", max_tokens=48)
        self.settings = make_settings(
            folder, bot=persona, queue={"max_pending": 4, "per_user_per_minute": 3}
        )
        self.daemon: Daemon | None = None

    @property
    def db(self) -> Path:
        return self.folder / DB

    async def run(self, steps: list[Step]) -> None:
        """Every step, then the last daemon answers what is left and stops."""
        await self.start()
        try:
            for step in steps:
                await self.act(step)
            await self.progressing(self._running().wait_idle(), "the last answers")
        finally:
            if self.daemon is not None:
                await self.stop()

    async def start(self) -> None:
        self.platform.life += 1
        engine = await LlamaCppBackend.load(self.model, n_ctx=2048, n_threads=2)
        store = await Store.open(self.db)
        personas = load_personas(self.settings.bot.personas_dir)
        adapters = {"test": self.platform}
        self.daemon = Daemon(self.settings, store, engine, personas, adapters)  # type: ignore[arg-type]
        await self.daemon.start()

    async def stop(self, grace: float | None = None, during: Incoming | None = None) -> None:
        """Stop the daemon; `during`: a message that arrives while it is stopping."""
        daemon = self._running()
        stopping = asyncio.ensure_future(daemon.stop(grace))
        await asyncio.sleep(0)  # stop() has begun: a message now is kept for the next start
        if during is not None:
            await self.deliver(during)
        await stopping
        await daemon.store.close()
        await daemon.backend.close()
        self.daemon = None

    def _running(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    async def handle(self, event: ChatEvent) -> Outcome:
        return await self._running().handle(event)

    async def deliver(self, message: Incoming) -> Sent:
        self.platform.post(message)  # on the platform, where a reply can quote it
        outcome = await self.handle(message)
        sent = Sent(message, outcome, [message.text])
        self.sent.append(sent)
        if outcome not in (Outcome.ACCEPTED, Outcome.DEFERRED, Outcome.COMMAND):
            self.never_stored.append(message.text)
        return sent

    def new_message(
        self, author: str, channel: str, reply_to: str | None = None, text: str | None = None
    ) -> Incoming:
        return Incoming(
            platform="test",
            channel_id=channel,
            message_id=next(self._ids),
            author_id=author,
            author_name=PEOPLE[author],
            text=text or f"{next(self._markers)} what now",
            is_admin=author == ADMIN,
            reply_to_id=reply_to,
        )

    def pick(self, which: object) -> Sent | None:
        """A question sent so far: the `which`th counted back from the latest (modulo their
        number), or for None the one whose answer is being streamed now (else the latest).
        None before the first."""
        asked = [s for s in self.sent if not s.is_command]
        if not asked:
            return None
        if which is None:
            streaming = {
                s.record.message.message_id
                for s in self.platform.shown
                if s.record.updates and not s.ends
            }
            return next((s for s in asked if s.message.message_id in streaming), asked[-1])
        return asked[-1 - int(which) % len(asked)]  # type: ignore[call-overload]

    async def act(self, step: Step) -> None:
        kind, *args = step
        if kind == "ask":
            author, channel, quoting, while_restarting = args
            quoted = self.pick(quoting) if quoting is not None else None
            reply_to = quoted.message.message_id if quoted is not None else None
            message = self.new_message(str(author), str(channel), reply_to)
            if while_restarting:
                await self.stop(during=message)
                await self.start()
            else:
                await self.deliver(message)
        elif kind == "restart":
            await self.stop(grace=0 if args[0] else None)
            await self.start()
        elif kind == "wait":
            await self.wait(str(args[0]))
        elif kind == "forget":
            await self.forget(str(args[0]), None if args[1] is None else str(args[1]))
        elif (target := self.pick(args[0])) is not None:
            await self.steer(str(kind), target, args[1:])

    async def steer(self, kind: str, target: Sent, args: list[object]) -> None:
        """An edit, deletion, regenerate or stop of an earlier question."""
        msg = target.message
        if kind == "edit":
            await self.edit(target, by_someone_else=bool(args[0]))
        elif kind == "delete":
            self.platform.posted.pop(msg.message_id, None)
            await self.handle(MessageDeleted("test", msg.channel_id, msg.message_id))
            target.gone = True
        elif kind == "regenerate":
            by = ADMIN if args[0] else msg.author_id
            request = RegenerateRequested(msg, by, requester_is_admin=by == ADMIN)
            if await self.handle(request) is Outcome.APPLIED:
                target.regenerated.append(next(self.clock))
        elif kind == "stop":
            stop = StopRequested("test", msg.channel_id, msg.message_id)
            if await self.handle(stop) is Outcome.APPLIED:
                target.stops += 1
        else:
            raise ValueError(kind)

    async def edit(self, target: Sent, by_someone_else: bool) -> None:
        msg = target.message
        editor = msg.author_id
        if by_someone_else:
            editor = next(p for p in sorted(PEOPLE) if p != msg.author_id)
        text = f"{next(self._markers)} edited"
        outcome = await self.handle(
            MessageEdited("test", msg.channel_id, msg.message_id, editor, text)
        )
        if by_someone_else:
            assert outcome is Outcome.IGNORED, "someone else's edit applied"
        if outcome is Outcome.APPLIED:
            target.versions.append(text)
            self.platform.post(replace(msg, text=text))
        else:
            self.never_stored.append(text)

    async def forget(self, who: str, whom: str | None) -> None:
        """`!forget` (whom None) or `!forget <whom>` (for an admin only), sent by `who`."""
        text = "!forget" + (f" {whom}" if whom else "")
        # `!forget` also stops the answers being written in its channel (bot.commands.memory):
        # one open as it is sent may end cut, without a stop step of its own.
        open_now = {r.record.message.message_id for r in self.platform.shown if not r.ends}
        sent = await self.deliver(self.new_message(who, CHANNELS[0], text=text))
        if sent.outcome is not Outcome.COMMAND:
            return  # refused (too many commands): nothing forgotten
        (said,) = [s.ends for s in self.platform.shown if s.record.message is sent.message]
        answer = said[0][2]
        if whom is not None and who != ADMIN:
            assert answer.startswith("Only an admin"), answer
            return
        assert answer.startswith("Deleted "), answer
        for earlier in self.sent:
            if earlier.message.author_id == (whom or who) and not earlier.is_command:
                earlier.gone = True
            if earlier.message.channel_id == CHANNELS[0] and (
                earlier.message.message_id in open_now
            ):
                earlier.stops += 1

    async def wait(self, what: str) -> None:
        daemon = self._running()
        if what == "idle":
            await self.progressing(daemon.wait_idle(), "idle")
        elif len(daemon.queue) or daemon.in_flight:  # a tuple: empty when nothing is
            # Until an answer shows its first words (or ends): a step taken now meets it
            # while it is written.
            self.platform.showing.clear()
            shown = asyncio.ensure_future(self.platform.showing.wait())
            # Awaited, not polled: a poll would wake after a tiny model's whole answer.
            before = None
            while not shown.done() and before != (before := self.progress()):
                await asyncio.wait({shown}, timeout=QUIET_S)
            assert shown.done(), f"no progress in {QUIET_S} s waiting for an answer to show"

    def progress(self) -> object:
        return sum(len(s.record.updates) + len(s.ends) for s in self.platform.shown)

    async def progressing(self, done: Awaitable[object], what: str) -> None:
        await wait_progressing(done, self.progress, QUIET_S, what)


def stored_text(final: str) -> str:
    """What the store keeps of a shown answer: the model's text without its footnote."""
    text, _, _ = final.partition(texts.footnote(["x"]).partition("(")[0] + "(")
    return "" if text == texts.EMPTY_REPLY else text


def stored_answers(db: Path) -> Counter[tuple[str, str]]:
    """The bot's answers in the history, as (channel key, text)."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT channel, text FROM messages WHERE role = 'assistant'")
        return Counter((str(channel), str(text)) for channel, text in rows)
