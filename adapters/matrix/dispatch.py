"""Handing each sync's events to the daemon: in order within a room, rooms side by side.

One room's slow event (a `!forget` or a redaction waiting on the model, a lookup at the
homeserver) holds up that room only. A sync's token is saved once every event of that sync,
and of every sync before it, has been handed over, so after a restart nothing is seen twice
and nothing is skipped.

What was taken from syncs but not handed over yet is bounded. At the bound the sync loop waits
before asking for more: the homeserver keeps the rest of the room's timeline meanwhile, so
nothing is dropped (dropping would lose messages for good, as the saved token moves past them)
and memory stays bounded. A flood therefore slows the bot's reading, never its memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from nio import Event, MatrixRoom

from adapters.common.failure import describe

log = structlog.get_logger(__name__)

# Events taken from syncs and not handed to the daemon yet, at most (a sync brings at most 50
# per room; the daemon takes a message in milliseconds, unless that room waits on the model).
MAX_WAITING_EVENTS = 1000
# Whole syncs waiting to be sorted into rooms, at most (then the sync loop waits).
MAX_WAITING_SYNCS = 2


@dataclass(slots=True)
class Batch:
    """The events of one sync, in order, and the token to save once they are handed over."""

    items: list[tuple[MatrixRoom, Event]] = field(default_factory=list)
    next_batch: str | None = None
    initial: bool = False  # the first sync without a saved token: history, never answered


@dataclass(slots=True)
class _Mark:
    """A sync's token, and how many of its events are still to be handed over."""

    token: str | None
    left: int


@dataclass(slots=True)
class _Item:
    room: MatrixRoom
    event: Event
    initial: bool
    mark: _Mark


PassOn = Callable[[MatrixRoom, Event, bool], Awaitable[None]]


class Dispatcher:
    """Sorts the syncs' events into one queue per room, each served by its own task, and
    says which sync token may be saved (`advance`) as they are handed over."""

    def __init__(
        self,
        pass_on: PassOn,
        advance: Callable[[str], None],
        save: Callable[[], Awaitable[None]],
        max_waiting: int = MAX_WAITING_EVENTS,
    ) -> None:
        self._pass_on = pass_on  # (room, event, initial): translate and hand to the daemon
        self._advance = advance  # (token): the state's next_batch
        self._save = save  # write the sync state
        self.max_waiting = max_waiting
        self.inbox: asyncio.Queue[Batch] = asyncio.Queue(MAX_WAITING_SYNCS)
        self.waiting = 0  # events sorted into rooms and not handed over yet
        self._rooms: dict[str, deque[_Item]] = {}
        self._servers: dict[str, asyncio.Task[None]] = {}
        self._marks: deque[_Mark] = deque()
        self._space_freed = asyncio.Event()

    async def run(self) -> None:
        """Sort each sync from `inbox` into the rooms' queues, waiting while `max_waiting`
        events wait already. When cancelled, the rooms' tasks end too."""
        try:
            while True:
                batch = await self.inbox.get()
                while self.waiting and self.waiting + len(batch.items) > self.max_waiting:
                    self._space_freed.clear()
                    await self._space_freed.wait()
                self._sort(batch)
                await self._settle()  # a sync without events: its token is saved in turn
        finally:
            servers = list(self._servers.values())
            for task in servers:
                task.cancel()
            await asyncio.gather(*servers, return_exceptions=True)

    def _sort(self, batch: Batch) -> None:
        mark = _Mark(batch.next_batch, len(batch.items))
        self._marks.append(mark)
        for room, event in batch.items:
            self._rooms.setdefault(room.room_id, deque()).append(
                _Item(room, event, batch.initial, mark)
            )
            self.waiting += 1
            if room.room_id not in self._servers:
                self._servers[room.room_id] = asyncio.create_task(
                    self._serve(room.room_id), name="matrix-room"
                )

    async def _serve(self, room_id: str) -> None:
        """Hand one room's events over in order; ends when the room's queue is empty."""
        queue = self._rooms[room_id]
        try:
            while queue:
                item = queue[0]
                try:
                    await self._pass_on(item.room, item.event, item.initial)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("could not handle a Matrix event", error=describe(exc))
                queue.popleft()
                self.waiting -= 1
                item.mark.left -= 1
                self._space_freed.set()
                await self._settle()
        finally:
            del self._servers[room_id]
            if not queue:
                del self._rooms[room_id]

    async def _settle(self) -> None:
        """Advance the token past every sync whose events are all handed over, in order."""
        settled = False
        while self._marks and self._marks[0].left == 0:
            token = self._marks.popleft().token
            if token is not None:
                self._advance(token)
            settled = True
        if settled:
            await self._save()
