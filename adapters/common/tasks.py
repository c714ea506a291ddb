"""Work an adapter runs beside its main loop: a reply's edits, a join, a read-back.

asyncio keeps only a weak reference to a task, so each is held here until it ends; nobody
awaits these, so a failure is logged here; and none starts once the adapter stops, since it
would die pending with the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import structlog

from adapters.common.failure import describe

log = structlog.get_logger(__name__)


class BackgroundTasks:
    """One adapter's background tasks: held until done, failures logged, none after stop."""

    def __init__(self, owner: str) -> None:
        self._owner = owner  # the adapter's name, for the log
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run `coro` in the background; None once closed (then `coro` never runs)."""
        if self.closed:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))  # a copy: tasks end while the caller looks

    def __len__(self) -> int:
        return len(self._tasks)

    def open(self) -> None:
        """Take tasks (again: an adapter may be started after a stop)."""
        self.closed = False

    def close(self) -> None:
        """Start no more."""
        self.closed = True

    async def stop(self, grace_s: float = 0.0, wait_s: float = 2.0) -> None:
        """Start no more; give the running ones `grace_s` to finish, then cancel the rest and
        wait up to `wait_s` for them to end."""
        self.close()
        if self._tasks and grace_s > 0:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=wait_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                "background task failed",
                adapter=self._owner,
                task=task.get_name(),
                error=describe(error),
            )
