"""What the daemon reports as it works (answers, refusals, errors), once per event and never
per token. This base does nothing: the daemon's default when no metrics are served, and it
keeps prometheus_client out of a plain console chat."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.model.types import GenerationResult


class Observer:
    """Hears what the daemon did; this base ignores it all (bot.app.metrics.Metrics counts)."""

    def answered(self, platform: str, result: GenerationResult) -> None:
        pass

    def refused(self, platform: str, reason: str) -> None:
        pass

    def error(self, kind: str) -> None:
        """kind: "answer" (an answer failed), "event" (an event could not be handled),
        "reload" (SIGHUP found a broken config or persona), "store" (saving an answer
        failed; it is tried again)."""
