"""How the Matrix adapter hands events over, without a homeserver: rooms side by side, each in
order, the sync token saved only past what was handed over, a bound that makes the sync loop
wait; and which redactions reach the core (nio's own room and event types)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nio import MatrixRoom, RedactionEvent

from adapters.matrix.account import Account
from adapters.matrix.dispatch import MAX_WAITING_SYNCS, Batch, Dispatcher
from adapters.matrix.translate import Translator
from bot.events import MessageDeleted
from bot.settings import load_settings

BOT = "@bot:hs"


class Room:
    """A room's events as a test hands them in, and a gate that holds them up."""

    def __init__(self, room_id: str) -> None:
        self.room = MatrixRoom(room_id, BOT)
        self.gate = asyncio.Event()
        self.gate.set()


class Recorder:
    """The dispatcher's other side: what was handed over, tokens saved, in order."""

    def __init__(self, rooms: list[Room]) -> None:
        self.gates = {room.room.room_id: room.gate for room in rooms}
        self.handed: list[str] = []
        self.tokens: list[str] = []
        self.saved: list[str | None] = []

    async def pass_on(self, room: MatrixRoom, event: Any, initial: bool) -> None:
        await self.gates[room.room_id].wait()
        if event == "boom":
            raise RuntimeError("a bad event")
        self.handed.append(event)

    def advance(self, token: str) -> None:
        self.tokens.append(token)

    async def save(self) -> None:
        self.saved.append(self.tokens[-1] if self.tokens else None)


def batch(token: str | None, *items: tuple[Room, str]) -> Batch:
    return Batch([(room.room, event) for room, event in items], token)  # type: ignore[misc]


@asynccontextmanager
async def running(recorder: Recorder, max_waiting: int = 100) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(recorder.pass_on, recorder.advance, recorder.save, max_waiting)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def settled(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (it must, with nothing else to wait for)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never settled")


async def test_one_room_waiting_holds_up_no_other_and_no_token_past_it() -> None:
    a, b = Room("!a:hs"), Room("!b:hs")
    recorder = Recorder([a, b])
    a.gate.clear()  # room a's first event waits (e.g. a !forget waiting for the model)
    async with running(recorder) as dispatcher:
        await dispatcher.inbox.put(batch("s1", (a, "a1"), (b, "b1"), (a, "a2")))
        await dispatcher.inbox.put(batch("s2", (b, "b2"), (b, "boom"), (b, "b3")))
        await settled(lambda: recorder.handed == ["b1", "b2", "b3"])
        assert recorder.tokens == []  # s1 is not all handed over: no token may be saved
        a.gate.set()
        await settled(lambda: len(recorder.handed) == 5)
        assert [e for e in recorder.handed if e.startswith("a")] == ["a1", "a2"]
        await settled(lambda: recorder.tokens == ["s1", "s2"])
        assert recorder.saved[-1] == "s2"
        assert dispatcher.waiting == 0


async def test_at_the_bound_the_sync_loop_waits_and_nothing_is_dropped() -> None:
    a, b = Room("!a:hs"), Room("!b:hs")
    recorder = Recorder([a, b])
    a.gate.clear()
    async with running(recorder, max_waiting=3) as dispatcher:
        for i in range(3):
            await dispatcher.inbox.put(batch(f"s{i}", (a, f"a{i}")))
        await settled(lambda: dispatcher.waiting == 3)
        # Full: one more sync waits to be sorted, MAX_WAITING_SYNCS in the inbox; then the sync
        # loop waits to put more (and so asks the homeserver for nothing meanwhile).
        for i in range(3, 4 + MAX_WAITING_SYNCS):
            await dispatcher.inbox.put(batch(f"s{i}", (b, f"b{i}")))
        blocked = asyncio.create_task(dispatcher.inbox.put(batch("last", (b, "b-last"))))
        await settled(lambda: dispatcher.inbox.full())
        for _ in range(100):
            await asyncio.sleep(0)
        assert not blocked.done() and recorder.handed == [] and dispatcher.waiting == 3
        a.gate.set()
        await blocked
        await settled(lambda: recorder.tokens and recorder.tokens[-1] == "last")
        later = [f"{i}" for i in range(3, 4 + MAX_WAITING_SYNCS)]
        assert recorder.handed == ["a0", "a1", "a2", *[f"b{i}" for i in later], "b-last"]
        assert recorder.tokens == ["s0", "s1", "s2", *[f"s{i}" for i in later], "last"]


async def test_stopping_ends_the_rooms_tasks() -> None:
    a = Room("!a:hs")
    a.gate.clear()
    recorder = Recorder([a])
    async with running(recorder) as dispatcher:
        await dispatcher.inbox.put(batch("s1", (a, "a1")))
        await settled(lambda: dispatcher.waiting == 1)
        rooms = [t for t in asyncio.all_tasks() if t.get_name() == "matrix-room"]
        assert len(rooms) == 1
    assert rooms[0].cancelled()


def redaction(sender: str, redacts: str) -> RedactionEvent:
    return RedactionEvent.from_dict(
        {
            "type": "m.room.redaction",
            "event_id": f"$redaction-by-{sender}",
            "sender": sender,
            "origin_server_ts": 0,
            "redacts": redacts,
            "content": {},
        }
    )


@pytest.mark.parametrize(
    ("redactor", "redacted", "applies"),
    [
        ("@alice:hs", "$alice-said", True),  # her own
        ("@mallory:hs", "$alice-said", False),  # someone else's (a server would refuse it)
        ("@mallory:hs", "$mallory-said", True),  # her own, though she is not allowed
        ("@mallory:hs", "$unknown", False),  # nothing the bot can place (no client to ask)
        ("@mod:hs", "$alice-said", True),  # the room's moderator
    ],
)
async def test_a_redaction_reaches_the_core_only_from_its_author_or_a_moderator(
    tmp_path: Any, redactor: str, redacted: str, applies: bool
) -> None:
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path},
        matrix={"homeserver": "http://127.0.0.1:9", "allowed_users": ["@alice:hs"]},
    )
    account = Account.from_settings(settings.matrix, settings.bot)
    account.user_id = BOT
    translator = Translator(account)
    translator.remember("$alice-said", "@alice:hs", "a secret")
    translator.remember("$mallory-said", "@mallory:hs", "spam")
    room = MatrixRoom("!room:hs", BOT)
    room.power_levels.users = {"@mod:hs": 50, "@alice:hs": 0, "@mallory:hs": 0}
    translated = await translator.translate(room, redaction(redactor, redacted), initial=False)
    expected = MessageDeleted("matrix", "!room:hs", redacted) if applies else None
    assert translated == expected
