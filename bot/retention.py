"""Retention: history older than `[bot] retention_days` is deleted, at start and then hourly.

Messages still waiting for an answer stay, and the backend forgets its cached state, so
purged words do not live on in a channel's KV cache either.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from bot.live import Live
from bot.model.backend import Backend
from bot.store import Store

log = structlog.get_logger(__name__)

PURGE_EVERY_S = 3600.0


class Retention:
    """Purges expired history on a timer while the daemon runs (when retention is set)."""

    def __init__(self, live: Live, store: Store, backend: Backend) -> None:
        self.live = live
        self.store = store
        self.backend = backend
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.live.settings.bot.retention_days is not None:
            self._task = asyncio.create_task(self._purge_loop(), name="hearthbot-retention")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def purge_expired(self) -> int:
        """Delete history older than `[bot] retention_days`; the number of messages deleted."""
        days = self.live.settings.bot.retention_days
        if days is None:
            return 0
        count = await self.store.purge(before=time.time() - days * 86400)
        if count:
            await self.backend.forget()
            log.info("purged old history", messages=count)
        return count

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                log.exception("purging old history failed")
            await asyncio.sleep(PURGE_EVERY_S)
