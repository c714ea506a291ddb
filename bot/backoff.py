"""Waits between retries: doubling from the first up to a cap, back to the first after a
success, so an outage is not hammered and a recovery is noticed soon."""

from __future__ import annotations


class Backoff:
    """The next wait before retrying: doubles each time up to `cap`; `reset` after a success."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.delay = first  # the wait `next()` returns

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first
