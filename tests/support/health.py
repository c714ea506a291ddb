"""A real daemon (tiny GGUF, SQLite, the recording adapter) with its service attached and the
health endpoints served over HTTP on 127.0.0.1 (an ephemeral port)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bot.app.bootstrap import checked_personas
from bot.app.service import Service
from bot.app.systemd import Notifier
from bot.daemon import Daemon
from support.daemons import daemon_for
from support.recording_adapter import RecordingAdapter

LOCAL = "127.0.0.1:0"


@asynccontextmanager
async def served(
    tmp_path: Path, model: Path, notifier: Notifier | None = None, **sections: Any
) -> AsyncIterator[tuple[Daemon, RecordingAdapter, Service, str]]:
    """The daemon, its adapter, its service (telling `notifier`, else nobody) and the base
    URL of its health endpoints."""
    sections.setdefault("health", {"listen": LOCAL})
    async with daemon_for(tmp_path, model, start=False, **sections) as (daemon, adapter):
        service = Service(
            daemon.settings, None, checked_personas, notifier=notifier or Notifier(None)
        )
        try:
            await service.attach(daemon, serve_health=True)
            await daemon.start()
            assert service.health is not None
            yield daemon, adapter, service, f"http://127.0.0.1:{service.health.port}"
        finally:
            await service.close()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()
