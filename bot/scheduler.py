"""The fair, bounded queue between the adapters and the model's slots.

Fair across channels (start-time fair queuing with one unit per reply): every channel's next
message carries a round number; the lowest is served first. A channel that just got a reply
moves to the next round, and a channel that becomes active joins the round being served, so a
channel with one message waits at most for the replies in progress, however many messages a
busy channel has queued, and a channel cannot jump ahead by emptying and refilling. A channel
whose reply is still being generated is skipped (one reply per channel at a time) and keeps
its place, so with several slots a busy channel holds at most one of them. The bound counts
queued work; a per-user sliding-window rate limit keeps one person from filling it. Commands
(answered at once, never queued) have their own, more generous per-user limit. Refused
senders get at most one notice per `notice_interval_s`, so a flood never becomes a flood of
notices.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")

RATE_WINDOW_S = 60.0
# Commands a user may run per minute: twice the messages they may send, and at least this.
# Someone setting up a channel types a few in a row (!persona, !temperature, !status), so
# the message limit would be too tight; but each command is an answer in the channel, and
# !reset and !forget drop cached KV state (the next answer evaluates its prompt afresh), so
# a script typing hundreds a minute gets this many.
MIN_COMMANDS_PER_MINUTE = 12
# Bookkeeping of users is swept when it grows past this, so memory stays bounded.
_SWEEP_AT = 2048


def commands_per_minute(per_user_per_minute: int) -> int:
    """The command limit that goes with a message limit."""
    return max(2 * per_user_per_minute, MIN_COMMANDS_PER_MINUTE)


class Refusal(Enum):
    """Why a message was not admitted to the queue."""

    BUSY = "busy"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A reserved place in the queue, held while the message is being saved."""

    user: str


class RateLimit:
    """At most `per_minute` hits per user in any RATE_WINDOW_S (a sliding window)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        """Users with hits remembered (swept, so it stays bounded)."""
        return len(self._hits)

    def hit(self, user: str, now: float) -> bool:
        """Count a hit for `user`, or return False (not counted) when over the limit."""
        hits = self._hits.setdefault(user, deque())
        while hits and now - hits[0] >= RATE_WINDOW_S:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return False
        hits.append(now)
        if len(self._hits) > _SWEEP_AT:
            self._hits = {
                user: hits
                for user, hits in self._hits.items()
                if hits and now - hits[-1] < RATE_WINDOW_S
            }
        return True


class FairQueue(Generic[T]):
    """The bounded queue of work, served fairly across channels, with a per-user rate limit."""

    def __init__(
        self,
        max_pending: int,
        per_user_per_minute: int,
        notice_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        self._messages = RateLimit(per_user_per_minute)
        self._commands = RateLimit(commands_per_minute(per_user_per_minute))
        self.notice_interval_s = notice_interval_s
        self._clock = clock
        self._channels: dict[str, deque[T]] = {}
        self._order: list[tuple[int, int, str]] = []  # heap of (round, arrival, channel)
        self._round = 0  # round of the reply served last
        self._last_round: dict[str, int] = {}  # rounds of channels that went empty
        self._arrivals = itertools.count()
        self._queued = 0
        self._reserved = 0
        self._noticed: dict[str, float] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return self._queued

    @property
    def per_user_per_minute(self) -> int:
        return self._messages.per_minute

    @per_user_per_minute.setter
    def per_user_per_minute(self, value: int) -> None:
        """The command limit follows (tests and benchmarks lift both at once)."""
        self._messages.per_minute = value
        self._commands.per_minute = commands_per_minute(value)

    def admit(self, user: str, rate_exempt: bool = False) -> Ticket | Refusal:
        """Reserve a place for a message from `user`, or say why not."""
        if self._queued + self._reserved >= self.max_pending:
            return Refusal.BUSY
        if not rate_exempt and not self._messages.hit(user, self._clock()):
            return Refusal.RATE_LIMITED
        self._reserved += 1
        return Ticket(user)

    def admit_command(self, user: str, rate_exempt: bool = False) -> Refusal | None:
        """None when `user` may run a command now; commands take no place in the queue."""
        if rate_exempt or self._commands.hit(user, self._clock()):
            return None
        return Refusal.RATE_LIMITED

    def put(self, ticket: Ticket, channel: str, job: T) -> None:
        self._release(ticket)
        self.restore(channel, job)

    def restore(self, channel: str, job: T) -> None:
        """Queue work that was accepted before (pending after a restart): no bound, no limit."""
        jobs = self._channels.get(channel)
        if jobs is None:
            # Joins the round being served, but never earlier than its own next round.
            previous = self._last_round.pop(channel, None)
            start = self._round if previous is None else max(self._round, previous + 1)
            jobs = self._channels[channel] = deque()
            heapq.heappush(self._order, (start, next(self._arrivals), channel))
        jobs.append(job)
        self._queued += 1
        self._ready.set()

    def cancel(self, ticket: Ticket) -> None:
        """The reserved message was not queued after all (e.g. a duplicate)."""
        self._release(ticket)

    def _release(self, ticket: Ticket) -> None:
        if self._reserved <= 0:
            raise RuntimeError(f"ticket for {ticket.user} released twice")
        self._reserved -= 1

    def should_notify(self, user: str) -> bool:
        """Whether a refused `user` may be told so now (at most once per interval)."""
        now = self._clock()
        last = self._noticed.get(user)
        if last is not None and now - last < self.notice_interval_s:
            return False
        self._noticed[user] = now
        if len(self._noticed) > _SWEEP_AT:
            self._sweep(now)
        return True

    def next_nowait(self, skip: Container[str] = frozenset()) -> T | None:
        """The next job in round-robin order from a channel not in `skip` (those keep their
        place), or None when there is none."""
        passed = []
        while self._order and self._order[0][2] in skip:
            passed.append(heapq.heappop(self._order))
        entry = heapq.heappop(self._order) if self._order else None
        for kept in passed:
            heapq.heappush(self._order, kept)
        if entry is None:
            return None
        served_round, _, channel = entry
        jobs = self._channels[channel]
        job = jobs.popleft()
        self._round = served_round
        if jobs:
            heapq.heappush(self._order, (served_round + 1, next(self._arrivals), channel))
        else:
            del self._channels[channel]
            self._last_round[channel] = served_round
            if len(self._last_round) > _SWEEP_AT:
                self._sweep(self._clock())
        self._queued -= 1
        return job

    async def get(self, skip: Container[str] = frozenset()) -> T:
        """The next job from a channel not in `skip`, once there is one. `skip` is read
        again on every `wake()`, so it may be a live view of the channels being answered."""
        while True:
            job = self.next_nowait(skip)
            if job is not None:
                return job
            self._ready.clear()
            await self._ready.wait()

    def any(self, matches: Callable[[T], bool]) -> bool:
        """Whether some queued job matches."""
        return any(matches(job) for jobs in self._channels.values() for job in jobs)

    def jobs(self) -> list[T]:
        """Every queued job."""
        return [job for jobs in self._channels.values() for job in jobs]

    def last(self, channel: str) -> T | None:
        """The channel's newest queued job (not taken yet), if any."""
        jobs = self._channels.get(channel)
        return jobs[-1] if jobs else None

    def wake(self) -> None:
        """Let `get` look again: a channel it skipped may be free now."""
        self._ready.set()

    def remove(self, keep: Callable[[T], bool]) -> int:
        """Drop queued jobs for which keep() is False (e.g. a user asked to be forgotten)."""
        removed = 0
        rounds = {channel: r for r, _, channel in self._order}
        for channel in list(self._channels):
            jobs = self._channels[channel]
            kept = deque(job for job in jobs if keep(job))
            removed += len(jobs) - len(kept)
            if kept:
                self._channels[channel] = kept
            else:
                del self._channels[channel]
                self._last_round[channel] = rounds[channel] - 1
        self._order = [entry for entry in self._order if entry[2] in self._channels]
        heapq.heapify(self._order)
        self._queued -= removed
        return removed

    def _sweep(self, now: float) -> None:
        self._noticed = {
            user: at for user, at in self._noticed.items() if now - at < self.notice_interval_s
        }
        # An idle channel's round only matters while it is ahead of the rounds being served.
        self._last_round = {c: r for c, r in self._last_round.items() if r >= self._round}
