"""The daemon with the real engine (tiny GGUF), real SQLite and a recording adapter, for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.daemon import Daemon
from bot.events import Outcome
from bot.model.backend import Backend
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.settings import Settings, load_settings
from bot.store import Store
from support.recording_adapter import RecordedReply, RecordingAdapter, message

DB = "hearthbot.db"


def make_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    sections.setdefault("bot", {})
    sections["bot"] = {"data_dir": tmp_path, **sections["bot"]}
    return load_settings(None, **sections)


@asynccontextmanager
async def daemon_for(
    tmp_path: Path,
    model: Path,
    start: bool = True,
    n_ctx: int = 2048,
    engine_cls: type[LlamaCppBackend] = LlamaCppBackend,
    kv_cache_mb: int = 0,
    backend: Backend | None = None,
    slots: int | None = None,
    **sections: Any,
) -> AsyncIterator[tuple[Daemon, RecordingAdapter]]:
    """`backend`: used instead of loading `engine_cls` (e.g. the openai backend); closed at
    the end like the engine. `slots`: how many answers are generated at once (the engine's
    `parallel`; one unless a test asks for more)."""
    settings = make_settings(tmp_path, **sections)
    engine = backend or await engine_cls.load(
        model, n_ctx=n_ctx, n_threads=2, kv_cache_mb=kv_cache_mb, parallel=slots or 1
    )
    if backend is not None and slots is not None:
        engine.slots = slots  # type: ignore[misc]
    store = await Store.open(tmp_path / DB)
    adapter = RecordingAdapter()
    personas = load_personas(settings.bot.personas_dir)
    daemon = Daemon(settings, store, engine, personas, {"test": adapter})  # type: ignore[dict-item]
    try:
        if start:
            await daemon.start()
        yield daemon, adapter
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()


async def answered(record: RecordedReply, timeout: float = 90) -> str:
    await asyncio.wait_for(record.done.wait(), timeout)
    assert record.final is not None, record.failed
    return record.final


async def ask(daemon: Daemon, adapter: RecordingAdapter, text: str, **kw: Any) -> str:
    msg = message(text, **kw)
    outcome = await daemon.handle(msg)
    assert outcome in (Outcome.ACCEPTED, Outcome.COMMAND)
    (record,) = adapter.for_message(msg.message_id)
    return await answered(record)


@asynccontextmanager
async def model_held(engine: Backend) -> AsyncIterator[None]:
    """The engine's model thread is busy until the block ends: a generation or ping asked for
    meanwhile waits its turn (the in-process engine only: it has the thread)."""
    gate = threading.Event()
    held = asyncio.ensure_future(engine._call(lambda: gate.wait(120)))  # type: ignore[attr-defined]
    await asyncio.sleep(0)  # queued on the thread before anything asked for in the block
    try:
        yield
    finally:
        gate.set()
        await held
