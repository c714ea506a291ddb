"""An in-memory adapter for daemon tests: it implements bot.events.Adapter (our own
interface, not a platform library) and records everything the core asks it to show."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from bot.events import Incoming, Quoted, Sink

_ids = itertools.count(1)


@dataclass
class RecordedReply:
    """Everything the core showed for one message: typing, updates, the final text."""

    message: Incoming
    typing: int = 0
    updates: list[str] = field(default_factory=list)
    final: str | None = None
    failed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Reply:
    """The reply handle that writes into a RecordedReply. A broken one raises from update,
    finish and fail, as a buggy adapter might (the protocol says they must not); a gated one
    ends only once its gate opens, as a slow platform call would; `ended` gets each reply's
    message id as it ends."""

    def __init__(
        self,
        record: RecordedReply,
        broken: bool = False,
        gate: asyncio.Event | None = None,
        ended: list[str] | None = None,
    ) -> None:
        self.record = record
        self.broken = broken
        self.gate = gate
        self.ended = ended if ended is not None else []

    async def typing(self) -> None:
        self.record.typing += 1

    async def update(self, text: str) -> None:
        self._break()
        self.record.updates.append(text)

    async def finish(self, text: str) -> None:
        await self._end()
        self.record.final = text
        self.record.done.set()

    async def fail(self, notice: str) -> None:
        await self._end()
        self.record.failed = notice
        self.record.done.set()

    async def _end(self) -> None:
        self._break()
        if self.gate is not None:
            await self.gate.wait()
        assert self.record.final is None and self.record.failed is None, "answered twice"
        self.ended.append(self.record.message.message_id)

    def _break(self) -> None:
        if self.broken:
            raise RuntimeError("a broken reply handle")


class RecordingAdapter:
    """A platform in memory: keeps every reply and refusal for the test to read."""

    name = "test"

    def __init__(self) -> None:
        self.replies: list[RecordedReply] = []
        self.refusals: list[tuple[Incoming, str]] = []
        self.sink: Sink | None = None
        self.broken: set[str] = set()  # message ids whose replies raise (see Reply)
        self.gates: dict[str, asyncio.Event] = {}  # message id → its reply ends once set
        self.ended: list[str] = []  # message ids, in the order their replies ended
        self._failure: asyncio.Future[str] | None = None
        # What is on the "platform" to quote (bot.events.QuoteSource): a test posts a
        # message here, and takes it away as a deletion on the platform would.
        self.posted: dict[str, Quoted] = {}
        self.forgotten: dict[str, float] = {}  # author id → forget time the core passed on

    async def start(self, sink: Sink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        self.sink = None

    def is_connected(self) -> bool:
        return self.sink is not None

    @property
    def failure(self) -> asyncio.Future[str]:
        """One future for the adapter's life (a test resolves it to fail the platform);
        made on first use, because a future needs the running loop."""
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

    def open_reply(self, message: Incoming) -> Reply:
        record = RecordedReply(message)
        self.replies.append(record)
        broken, gate = message.message_id in self.broken, self.gates.get(message.message_id)
        return Reply(record, broken, gate, self.ended)

    async def refuse(self, message: Incoming, notice: str) -> None:
        self.refusals.append((message, notice))

    def post(self, message: Incoming) -> Incoming:
        """`message` is on the platform, where a reply can quote it."""
        self.posted[message.message_id] = Quoted(
            message.author_id, message.author_name, message.text, sent_at=message.received_at
        )
        return message

    async def fetch_quote(self, channel_id: str, message_id: str) -> Quoted | None:
        return self.posted.get(message_id)

    def forget_author(self, author_id: str, before: float) -> None:
        """Kept nothing of theirs, but like a real platform still has their messages: the
        core must keep them out of prompts itself (bot.forgotten)."""
        self.forgotten[author_id] = before

    def for_message(self, message_id: str) -> list[RecordedReply]:
        return [r for r in self.replies if r.message.message_id == message_id]


def message(
    text: str,
    channel: str = "c1",
    author: str = "u1",
    name: str = "Alice",
    direct: bool = False,
    admin: bool = False,
    received_at: float | None = None,
    server: str | None = None,
    reply_to_id: str | None = None,
) -> Incoming:
    extra = {"received_at": received_at} if received_at is not None else {}
    return Incoming(
        platform="test",
        channel_id=channel,
        message_id=f"m{next(_ids)}",
        author_id=author,
        author_name=name,
        text=text,
        is_direct=direct,
        is_admin=admin,
        server_id=server,
        reply_to_id=reply_to_id,
        **extra,  # type: ignore[arg-type]
    )
