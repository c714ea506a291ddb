"""What the daemon is doing, as one snapshot: health, metrics, systemd's STATUS= line and
`!status` read this instead of reaching into the daemon."""

from __future__ import annotations

from dataclasses import dataclass

from bot.events import Adapter
from bot.model.types import EngineStats


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The daemon at one moment: its queue, the answers in flight, its adapters."""

    queued: int  # messages waiting for a slot
    answering: int  # slots in use: answers being generated now
    slots: int  # answers that may be generated at once
    answered: int  # answers given since the daemon started
    stopping: bool
    adapters: dict[str, bool]  # adapter name → connected, in name order
    engine: EngineStats | None = None  # what the model engine says it is doing, if it can

    @property
    def disconnected(self) -> list[str]:
        return [name for name, connected in self.adapters.items() if not connected]


def is_connected(adapter: Adapter) -> bool:
    """Whether the adapter's platform connection is up. An adapter that cannot say counts as
    down: a broken adapter must not fail a health check or a scrape."""
    try:
        return bool(adapter.is_connected())
    except Exception:
        return False
