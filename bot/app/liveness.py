"""Are the workers alive? Asked by /healthz and before each systemd watchdog ping.

The answer worker (a task on the event loop) must still be running. The model worker answers
a trivial job through its thread. A job waits behind the replies being generated, though, so
while any is, the model worker also counts as alive as long as a token count moves. Only a
model worker that has done neither for `stall_s` is reported stuck. A store that cannot be
written is no reason: answers wait for it, and a restart would not make room on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.model.types import Generation

Ping = Callable[[], Awaitable[object]]
Failure = Callable[[], str | None]


def worker_ping(backend: object) -> Ping | None:
    """The backend's `ping` (a trivial job through its model thread), if it has a thread:
    the in-process engine does; a remote server's health is its own."""
    ping = getattr(backend, "ping", None)
    return ping if callable(ping) else None


class WorkerProbe:
    """Whether the workers still work: the answer worker has not ended (`failure` says why it
    did), and the model worker answers pings. One ping is in flight at a time, so probing
    often costs nothing; a ping waits behind the replies being generated, so while any is,
    the worker counts as alive as long as a token count moves."""

    def __init__(
        self,
        ping: Ping | None,
        in_flight: Callable[[], Sequence[Generation]],
        stall_s: float,
        failure: Failure = lambda: None,
    ) -> None:
        self._ping = ping
        self._in_flight = in_flight
        self._failure = failure
        self.stall_s = stall_s
        self._pending: asyncio.Future[object] | None = None
        self._sent = 0.0
        self._seen: dict[int, int] = {}  # id of each generation in flight → its token count
        self._seen_at = 0.0

    async def check(self, wait: float = 0.0) -> str | None:
        """None when alive, else why not. Waits up to `wait` seconds for the ping."""
        if (failure := self._failure()) is not None:
            return failure
        if self._ping is None:
            return None
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._ping())
            self._sent = time.monotonic()
        if wait > 0 and not self._pending.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pending), wait)
        if self._pending.done():
            if self._pending.cancelled() or self._pending.exception() is not None:
                return "the model worker failed a ping"
            return None
        waited = time.monotonic() - self._sent
        if waited < self.stall_s or self._progressing():
            return None
        return f"the model worker has not answered for {waited:.0f} s"

    def _progressing(self) -> bool:
        generations = self._in_flight()
        if not generations:
            return False
        now = time.monotonic()
        seen = {id(g): g.result.generated_tokens for g in generations}
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
        return now - self._seen_at < self.stall_s

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
