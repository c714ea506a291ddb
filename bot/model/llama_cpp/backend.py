"""The in-process backend: llama.cpp through llama-cpp-python, on one model thread.

llama.cpp contexts are not thread-safe, so all model work happens on one thread: the step
loop (bot.model.llama_cpp.engine), which generates up to `parallel` replies at once, and small
jobs run between two steps (a ping waits for one step, never for a reply). The event loop only
receives text. Tokenizing and rendering the chat template only read the vocabulary and may be
done from any thread; forgetting a channel's KV state never waits for the model thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import llama_cpp
import structlog

from bot.model.energy import Source, choose_source
from bot.model.footprint import Accountant
from bot.model.gguf import ModelFileError, available_memory, check_fits, inspect_model
from bot.model.llama_cpp.engine import Engine
from bot.model.llama_cpp.jobs import Jobs
from bot.model.llama_cpp.kv_cache import SnapshotCache
from bot.model.llama_cpp.loader import LoadedModel, PoolShape, VocabView
from bot.model.llama_cpp.placement import Attention, Offload, Placement
from bot.model.llama_cpp.pool import KvPool
from bot.model.llama_cpp.projector import Projector, ProjectorError
from bot.model.llama_cpp.vision import Vision
from bot.model.template import ChatText, UsesChatText
from bot.model.types import EngineStats, Generation, GenerationRequest, ModelInfo
from bot.settings import FootprintSettings

log = structlog.get_logger(__name__)

# Idle channels kept resident per slot, beyond the slots themselves (each sequence id costs
# llama.cpp an output row of n_vocab floats, ~0.6 MB for a 150k vocabulary).
RESIDENT_PER_SLOT = 2
# Slots: an idle channel's window is its own and costs no other reply's step, so it stays
# until its slot is needed (KvPool.park never runs).
NEVER_PARK = sys.maxsize


class LlamaCppBackend(UsesChatText):
    """The in-process backend: owns the model and its thread. Create with
    `await LlamaCppBackend.load(...)`."""

    engine_cls: type[Engine] = Engine
    slots: int = 1  # replies generated at once: `parallel`, set when loaded
    energy: Source  # where the replies' energy is read, set when loaded

    def __init__(self) -> None:
        self._jobs = Jobs()
        self._thread = threading.Thread(target=self._run, name="hearthbot-model", daemon=True)
        self._loaded: LoadedModel | None = None
        self._engine: Engine | None = None
        self._text: ChatText
        self._pool: KvPool
        self.info: ModelInfo
        self._cache = SnapshotCache(0)  # the pool's snapshots of evicted channels

    @classmethod
    async def load(
        cls,
        path: Path,
        n_ctx: int,
        n_threads: int,
        n_batch: int = 512,
        check_memory: bool = True,
        kv_cache_mb: int = 0,
        parallel: int = 4,
        pool_tokens: int = 0,
        resident: int | None = None,
        idle_cells: int | None = None,
        repack: bool = True,
        offload: Offload | None = None,
        attention: Attention | None = None,
        energy: Source | None = None,
        mmproj: Path | None = None,
        kv_layout: Literal["pool", "slots"] = "pool",
    ) -> LlamaCppBackend:
        """Load the model on the worker thread. `parallel`: replies generated at once;
        `pool_tokens`: KV cells shared by all sequences (0: n_ctx × parallel); `resident`: idle
        channels kept in the pool (default 2 per slot); `idle_cells`: what idle channels may
        hold while replies generate (default 0, KvPool.park); `repack`:
        llama.cpp's CPU weight repacking (see LoadedModel); `offload`, `attention`: GPU
        layers, KV type and flash attention (bot.model.llama_cpp.placement); `energy`: where
        replies' energy is read (default: the best source of this box, bot.model.energy);
        `mmproj`: a vision projector for the model, so it sees pictures (bot.model.llama_cpp.
        vision); `kv_layout`: "pool" (one cache shared by the slots and the resident channels)
        or "slots" (a window of n_ctx per slot and no other residents: `pool_tokens`,
        `resident` and `idle_cells` do not apply; the daemon's default, bot.settings). Raises
        ModelFileError with a clear message."""
        attention = attention or Attention()
        pool_tokens = max(pool_tokens or n_ctx * parallel, n_ctx)
        if kv_layout == "slots":
            pool_tokens, resident, idle_cells = n_ctx * parallel, 0, NEVER_PARK
        summary = await asyncio.to_thread(inspect_model, path)
        if check_memory:
            check_fits(
                summary,
                pool_tokens,
                available_memory(),
                extra_bytes=kv_cache_mb * 2**20,
                kv_type=attention.kv_type,
            )
        resident = RESIDENT_PER_SLOT * parallel if resident is None else resident
        shape = PoolShape(
            pool_tokens=pool_tokens,
            n_seq_max=min(parallel + resident, llama_cpp.llama_max_parallel_sequences()),
            # A step holds every slot's next token plus a chunk of prompt.
            step_tokens=min(max(n_batch, parallel + 8), pool_tokens),
            n_threads=n_threads,
            attention=attention,
            unified=kv_layout == "pool",
        )
        if energy is None:
            energy = choose_source(
                FootprintSettings.model_validate({}).watts_per_core, on_gpu=runs_on_gpu(offload)
            ).source
        backend = cls()
        backend.energy = energy
        backend.slots = parallel
        backend._cache.budget_bytes = kv_cache_mb * 2**20
        backend._thread.start()
        try:
            await backend._call(
                lambda: backend._open(
                    path, shape, n_ctx, parallel, repack, offload or Offload(), idle_cells, mmproj
                )
            )
        except Exception as exc:
            backend._jobs.put(None)
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"llama.cpp could not load {path}: {exc}") from None
        return backend

    def _open(
        self,
        path: Path,
        shape: PoolShape,
        n_ctx: int,
        parallel: int,
        repack: bool,
        offload: Offload,
        idle_cells: int | None,
        mmproj: Path | None = None,
    ) -> None:
        loaded = LoadedModel(path, shape, repack, offload)
        self._loaded = loaded
        vocab = VocabView(loaded.model)
        # ChatText reads only what VocabView offers of a Llama.
        self._text = ChatText(cast(llama_cpp.Llama, vocab))
        vision = self._vision(mmproj, loaded) if mmproj is not None else None
        self._pool = KvPool(loaded.ctx.ctx, loaded.memory, shape.n_seq_max, self._cache)
        self._engine = self.engine_cls(
            loaded,
            self._pool,
            parallel,
            n_ctx,
            self.request_tokens,
            self._text.eog_tokens,
            Accountant(self.energy),
            vision=vision,
            opening=self._text.opening_tokens,
        )
        if idle_cells is not None:
            self._engine.idle_cells = idle_cells
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(loaded.model.model, desc, ctypes.sizeof(desc))
        self.info = ModelInfo(
            path=path,
            name=vocab.metadata.get("general.name") or path.stem,
            description=desc.value.decode("utf-8", errors="replace"),
            n_params=int(llama_cpp.llama_model_n_params(loaded.model.model)),
            size_bytes=path.stat().st_size,
            n_ctx=n_ctx,
            n_threads=shape.n_threads,
            quantization=self._text.quantization,
            runs_on=runs_on(loaded.placement, shape.n_threads),
            kv_type=loaded.placement.k_type,
            layers=loaded.placement.n_layers,
            offloaded_layers=loaded.placement.offloaded,
            sees_images=vision is not None,
            image_tokens=vision.projector.image_tokens if vision else 0,
            image_side_px=vision.projector.image_size if vision else 0,
        )

    def _vision(self, mmproj: Path, loaded: LoadedModel) -> Vision:
        """The projector opened for the loaded model, or ModelFileError naming the setting."""
        if not mmproj.is_file():
            self._free()
            raise ModelFileError(f"[model] mmproj: {mmproj} is not a file")
        try:
            projector = Projector(
                mmproj, loaded.model, loaded.shape.n_threads, use_gpu=loaded.shape.offloaded
            )
        except ProjectorError as exc:
            self._free()
            raise ModelFileError(f"[model] mmproj: {exc}") from None
        problem = (
            "it has no vision encoder"
            if not projector.vision
            else "its pictures take M-RoPE positions (Qwen2-VL and later), which hearthbot's "
            "engine does not place yet"
            if projector.mrope
            else ""
        )
        if problem:
            projector.close()
            self._free()
            raise ModelFileError(f"[model] mmproj: {mmproj}: {problem}")
        return Vision(projector, self._text.prompt_parts)

    async def close(self) -> None:
        if self._thread.is_alive():
            await self._call(self._free)
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 10)

    def _free(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        """Jobs between steps; while no reply runs, wait for a job, or until channels' next
        prompts are due to be read ahead (bot.model.llama_cpp.ahead), which is also done
        between the steps of replies past their prompts."""
        while True:
            engine = self._engine
            busy = engine is not None and engine.busy
            ahead = None if busy or engine is None else engine.ahead.wait_s()
            if not self._jobs.run(block=not busy, timeout=ahead):
                return
            # Idle until now: the replies handed out with this one are read with it (jobs.py).
            started = not busy and self._engine is not None and self._engine.busy
            if started and not self._jobs.gather():
                return
            engine = self._engine  # the jobs run may have closed it
            if engine is None:
                continue
            try:
                if engine.busy:
                    engine.step()
                    # Between steps only when no reply is on its way to start (jobs.py).
                    if self._jobs.empty() and not self._jobs.preparing and engine.ahead_due:
                        engine.read_ahead()
                elif engine.ahead.wait_s() == 0:
                    engine.read_ahead()
            except Exception:  # the worker must live on; the step ended its replies
                log.exception("a model step failed")

    async def ping(self) -> None:
        """A trivial job through the model thread: returns once the worker takes jobs (between
        two steps, so it never waits for a whole reply)."""
        await self._call(lambda: None)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await self._jobs.call(fn)

    # -- generation -----------------------------------------------------------------------------

    def start(self, request: GenerationRequest) -> Generation:
        """Queue a generation for the step loop; iterate the result for text. Safe to call from
        several tasks at once: each generation streams on its own."""
        generation = Generation(request, asyncio.get_running_loop())
        self._jobs.put(lambda: self._submit(generation))
        return generation

    def preparing(self) -> contextlib.AbstractContextManager[None]:
        """Around building a reply and starting it (bot.model.backend.preparing): an idle
        model thread holds its first step for the replies being built (jobs.py)."""
        return self._jobs.prepared()

    def _submit(self, generation: Generation) -> None:
        assert self._engine is not None
        self._engine.submit(generation)

    def quiet(self) -> bool:
        """Whether the model thread has nothing to do: no reply, nothing to read ahead (a
        benchmark waits for it before it times another program on the same cores)."""
        waiting = not self._jobs.empty()  # a job (a reply not yet handed to the engine) is work
        engine = self._engine
        return not waiting and (engine is None or not (engine.busy or engine.ahead.pending))

    def stats(self) -> EngineStats:
        """What the worker is doing (read without waiting for it)."""
        engine = self._engine
        return engine.stats if engine is not None else EngineStats(slots=self.slots)

    # -- per-channel KV state --------------------------------------------------------------------

    async def forget(self, key: str | None = None) -> None:
        """Drop cached KV state: of one channel, or of every channel (privacy: !reset and
        !forget must not leave the conversation in memory). Saved snapshots go at once; the
        model thread drops resident sequences before its next step (a generating one when it
        ends), so this never waits for a generation."""
        self._pool.forget(key)
        self.forget_text()
        self._jobs.put(self._honour_forgets)  # an idle worker drops them now

    def _honour_forgets(self) -> None:
        if self._engine is not None:  # not after close
            self._engine.honour_forgets()

    def cache_state(self, key: str) -> str:
        return self._pool.state(key)


def runs_on(placement: Placement, n_threads: int) -> str:
    """Where the model runs, as !status says it: "CPU, 4 threads" or the GPUs and layers."""
    cpu = f"CPU, {n_threads} thread{'s' * (n_threads != 1)}"
    if not placement.offloaded:
        return cpu
    gpus = " + ".join(placement.gpus)
    where = f"{gpus} ({placement.offloaded} of {placement.n_layers} layers)"
    return where if placement.offloaded == placement.n_layers else f"{where}, the rest on {cpu}"


def runs_on_gpu(offload: Offload | None = None) -> bool:
    """Whether llama.cpp will offload layers of the model to a GPU with these settings."""
    return bool(llama_cpp.llama_supports_gpu_offload()) and (offload or Offload()).layers() != 0
