"""What the daemon is doing, as one snapshot: health, metrics, systemd's STATUS= line and
`!status` read this instead of reaching into the daemon."""

from __future__ import annotations

from dataclasses import dataclass

from bot.events import Adapter
from bot.model.types import EngineStats


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The daemon at one moment: its queue, the answers in flight, its adapters, its store."""

    queued: int  # messages waiting for a slot
    answering: int  # slots in use: answers being generated now
    slots: int  # answers that may be generated at once
    answered: int  # answers given since the daemon started
    stopping: bool
    adapters: dict[str, bool]  # adapter name → connected, in name order
    store_problem: str | None = None  # why the last write failed, until one succeeds
    worker_failure: str | None = None  # why the answer worker is gone, if it is
    engine: EngineStats | None = None  # what the model engine says it is doing, if it can

    @property
    def disconnected(self) -> list[str]:
        return [name for name, connected in self.adapters.items() if not connected]

    @property
    def degraded(self) -> str | None:
        """What works only in part, as health and systemd's STATUS= line say it: answers
        wait while the store cannot be written. None when all works."""
        if self.store_problem is None:
            return None
        return f"degraded: store ({self.store_problem})"


def is_connected(adapter: Adapter) -> bool:
    """Whether the adapter's platform connection is up. An adapter that cannot say counts as
    down: a broken adapter must not fail a health check or a scrape."""
    try:
        return bool(adapter.is_connected())
    except Exception:
        return False
