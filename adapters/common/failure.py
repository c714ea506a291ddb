"""What went wrong, said once: the `failure` an adapter resolves when its platform refuses
the bot for good, and one scrubbed line for a log field."""

from __future__ import annotations

import asyncio

import structlog

from bot import logs

log = structlog.get_logger(__name__)


def describe(problem: object) -> str:
    """One scrubbed line for a log field: never a token, whatever a library put in it."""
    if isinstance(problem, BaseException):
        text = f"{type(problem).__name__}: {problem}" if str(problem) else type(problem).__name__
    else:
        text = str(problem)
    return logs.scrub(text.replace("\n", " "))[:500]


class ReportsFailure:
    """The Adapter protocol's `failure`: resolved with a one-line reason when the platform
    refuses the bot for good. Created on first use, because a future needs the running loop."""

    name: str
    _failure: asyncio.Future[str] | None = None

    @property
    def failure(self) -> asyncio.Future[str]:
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

    def give_up(self, reason: str) -> None:
        """Resolve `failure` with one line for the CLI to print (the first reason counts)."""
        reason = logs.scrub(reason)
        log.error("adapter gave up", adapter=self.name, reason=reason)
        if not self.failure.done():
            self.failure.set_result(reason)
