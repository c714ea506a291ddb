"""A daemon wired like `hearthbot run`, for benchmarks that go through the whole core."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.harness import RecordingEngine, repack
from bot.daemon import Daemon
from bot.events import Incoming
from bot.model.types import Generation, GenerationRequest
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store

_ids = itertools.count()


def persona_toml(max_tokens: int, temperature: float = 0.7) -> str:
    return (
        f'description = "benchmark"\ntemperature = {temperature}\nmax_tokens = {max_tokens}\n'
        'system_prompt = "You are a helpful assistant. Answer briefly."\n'
    )


class TimedEngine(RecordingEngine):
    """Notes when each generation was handed to the model worker."""

    def __init__(self) -> None:
        super().__init__()
        self.started_at: dict[int, float] = {}

    def start(self, request: GenerationRequest) -> Generation:
        generation = super().start(request)
        self.started_at[id(generation)] = time.perf_counter()
        return generation


class Reply:
    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.final = ""
        self.first_at: float | None = None  # when the first text was shown (perf_counter)

    async def typing(self) -> None:
        pass

    async def update(self, text: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    async def finish(self, text: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.final = text
        self.done.set()

    async def fail(self, notice: str) -> None:
        self.final = notice
        self.done.set()


class BenchAdapter:
    name = "bench"

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.refused = 0

    async def start(self, sink: object) -> None:
        pass

    async def stop(self) -> None:
        pass

    def is_connected(self) -> bool:
        return True

    @property
    def failure(self) -> asyncio.Future[str]:
        return asyncio.get_running_loop().create_future()

    def open_reply(self, message: Incoming) -> Reply:
        return self.replies.setdefault(message.message_id, Reply())

    async def refuse(self, message: Incoming, notice: str) -> None:
        self.refused += 1


@dataclass
class Bench:
    daemon: Daemon
    engine: TimedEngine
    adapter: BenchAdapter

    def message(self, channel: str, user: str, text: str) -> Incoming:
        return Incoming(
            platform="bench",
            channel_id=channel,
            message_id=f"m{next(_ids)}",
            author_id=user,
            author_name=user,
            text=text,
            is_admin=True,  # benchmarks measure the model and the queue, not the rate limit
        )


@asynccontextmanager
async def bench_daemon(
    model: Path,
    max_tokens: int,
    n_ctx: int = 4096,
    kv_cache_mb: int = 256,
    parallel: int = 4,
    engine_cls: type[TimedEngine] = TimedEngine,
    repack_weights: bool | None = None,
    n_threads: int | None = None,
    memory: dict[str, int] | None = None,
    kv_layout: Literal["slots", "pool"] = "slots",
) -> AsyncIterator[Bench]:
    """`memory`: the [memory] settings (summaries and notes), else their defaults;
    `kv_layout`: [model] kv_layout (the daemon's default: slots)."""
    with tempfile.TemporaryDirectory() as tmp:
        personas = Path(tmp) / "personas"
        personas.mkdir()
        (personas / "bench.toml").write_text(persona_toml(max_tokens))
        settings = load_settings(
            None,
            bot={"data_dir": tmp, "personas_dir": personas, "default_persona": "bench"},
            queue={"max_pending": 10_000, "per_user_per_minute": 10_000},
            memory=memory or {},
        )
        engine = await engine_cls.load(
            model,
            n_ctx=n_ctx,
            n_threads=n_threads or os.cpu_count() or 1,
            kv_cache_mb=kv_cache_mb,
            parallel=parallel,
            repack=repack() if repack_weights is None else repack_weights,
            kv_layout=kv_layout,
        )
        store = await Store.open(Path(tmp) / "hearthbot.db")
        adapter = BenchAdapter()
        daemon = Daemon(settings, store, engine, load_personas(personas), {"bench": adapter})  # type: ignore[dict-item]
        await daemon.start()
        try:
            yield Bench(daemon, engine, adapter)
        finally:
            await daemon.stop()
            await store.close()
            await engine.close()
