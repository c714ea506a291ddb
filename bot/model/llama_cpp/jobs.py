"""The model thread's jobs: work handed to it from the event loop, run between two steps.

Replies handed out together (a burst) reach the model thread milliseconds apart, each once
the event loop has built its prompt (9–32 ms for four, measured through the daemon). An idle
model thread that began stepping at the first would read it alone and the others a step
later, and each step reads all the weights once: on the bench model two steps of 21 and 64
rows took longer than llama-server's one of 104. So while replies are being prepared
(`preparing`, counted by the daemon around building each one: bot.model.backend.preparing),
an idle model thread holds its first step for them, GATHER_S at most. A reply that comes
alone waits for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

log = structlog.get_logger(__name__)

GATHER_S = 0.05
POLL_S = 0.002  # how often a held model thread looks whether the prepared replies are in

Job = Callable[[], None]


class Jobs:
    """The model thread's queue of jobs, and how many replies are being prepared for it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue()
        # Written on the event loop only; the model thread reads it.
        self.preparing = 0

    def put(self, job: Job | None) -> None:
        """Queue a job; None ends the model thread's loop."""
        self._queue.put(job)

    def empty(self) -> bool:
        return self._queue.empty()

    @contextlib.contextmanager
    def prepared(self) -> Iterator[None]:
        """Around building a reply's prompt and starting it (the start's job is queued before
        the count drops, so a held model thread never misses it)."""
        self.preparing += 1
        try:
            yield
        finally:
            self.preparing -= 1

    def run(self, block: bool, timeout: float | None) -> bool:
        """Run what is queued, first waiting for a job as told; False once told to end."""
        try:
            job = self._queue.get(block=block, timeout=timeout)
        except queue.Empty:
            return True
        while job is not None:
            try:
                job()
            except Exception:  # the model thread must live on (`call` hands errors back)
                log.exception("a model job failed")
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return True
        return False

    def gather(self) -> bool:
        """An idle model thread has a reply to start: run the jobs of the replies being
        prepared as they come, until none is or GATHER_S has passed; False once told to end."""
        deadline = time.monotonic() + GATHER_S
        while self.preparing > 0 and (left := deadline - time.monotonic()) > 0:
            if not self.run(True, min(left, POLL_S)):
                return False
        return self.run(False, None)  # a start queued just before the count dropped

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the model thread and return what it returns (or raise what it raises)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            try:
                value = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, value, None)

        self.put(job)
        return await future


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
