"""The model worker: one llama-cpp-python `Llama`, owned by one dedicated thread.

llama.cpp contexts are not thread-safe, and a generation holds the CPU for seconds, so all
model work happens on one thread and the event loop only receives text. Tokenizing and
rendering the chat template only read the vocabulary and may be done from any thread.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

from bot.model.gguf import ModelFileError, available_memory, check_fits, inspect_model
from bot.model.llama_cpp.kv_cache import Rate, Snapshot, SnapshotCache, common_prefix, restore_wins
from bot.model.llama_cpp.sampler import sampler_chain
from bot.model.template import ChatText, UsesChatText
from bot.model.types import Generation, GenerationRequest, ModelInfo
from bot.model.writer import GenerationWriter

# Shorter sequences are cheaper to evaluate again than to save.
MIN_SNAPSHOT_TOKENS = 32


class LlamaCppBackend(UsesChatText):
    """The in-process backend: owns the model and its thread. Create with
    `await LlamaCppBackend.load(...)`."""

    slots = 1  # one generation at a time (issue 14's batched engine runs `parallel`)

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hearthbot-model", daemon=True)
        self._llm: Any = None
        self._text: ChatText
        self.info: ModelInfo
        self._abort_flag: threading.Event | None = None
        # Keep a reference: ctypes frees a callback that Python no longer holds.
        self._abort_cb = llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort_cb = llama_cpp.ggml_abort_callback()  # NULL
        self._cache = SnapshotCache(0)
        self._resident_key: str | None = None
        # Starting guesses; measured as the backend runs.
        self._prompt_rate = Rate(200.0)  # prompt tokens per second
        self._copy_rate = Rate(2e9)  # snapshot bytes per second

    @classmethod
    async def load(
        cls,
        path: Path,
        n_ctx: int,
        n_threads: int,
        n_batch: int = 512,
        check_memory: bool = True,
        kv_cache_mb: int = 0,
    ) -> LlamaCppBackend:
        """Load the model on the worker thread. Raises ModelFileError with a clear message."""
        summary = await asyncio.to_thread(inspect_model, path)
        if check_memory:
            check_fits(summary, n_ctx, available_memory(), extra_bytes=kv_cache_mb * 2**20)
        backend = cls()
        backend._cache.budget_bytes = kv_cache_mb * 2**20
        backend._thread.start()
        try:
            await backend._call(lambda: backend._open(path, n_ctx, n_threads, n_batch))
        except Exception as exc:
            backend._jobs.put(None)
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"llama.cpp could not load {path}: {exc}") from None
        return backend

    def _open(self, path: Path, n_ctx: int, n_threads: int, n_batch: int) -> None:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(n_batch, n_ctx),
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self._llm = llm
        meta = llm.metadata
        self._text = ChatText(llm)
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(llm.model, desc, ctypes.sizeof(desc))
        self.info = ModelInfo(
            path=path,
            name=meta.get("general.name") or path.stem,
            description=desc.value.decode("utf-8", errors="replace"),
            n_params=int(llama_cpp.llama_model_n_params(llm.model)),
            size_bytes=path.stat().st_size,
            n_ctx=llm.n_ctx(),
            n_threads=n_threads,
            quantization=self._text.quantization,
        )

    async def close(self) -> None:
        if self._thread.is_alive():
            await self._call(self._free)
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join, 10)

    def _free(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def ping(self) -> None:
        """A trivial job through the model thread: returns once the worker takes jobs."""
        await self._call(lambda: None)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def job() -> None:
            try:
                value = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, value, None)

        self._jobs.put(job)
        return await future

    def _should_abort(self, _data: ctypes.c_void_p) -> bool:
        flag = self._abort_flag
        return flag is not None and flag.is_set()

    def _watch_abort(self, flag: threading.Event | None) -> None:
        """llama.cpp asks the abort callback between graph nodes, so it can interrupt a long
        prompt evaluation. It is a Python call per node, so it is only installed while the
        prompt is evaluated; during generation the loop checks between tokens."""
        self._abort_flag = flag
        callback = self._abort_cb if flag is not None else self._no_abort_cb
        llama_cpp.llama_set_abort_callback(self._llm.ctx, callback, None)

    # -- generation -----------------------------------------------------------------------------

    def start(self, request: GenerationRequest) -> Generation:
        """Queue a generation on the model thread; iterate the result for text."""
        generation = Generation(request, asyncio.get_running_loop())
        self._jobs.put(lambda: self._generate(generation))
        return generation

    def _generate(self, gen: Generation) -> None:
        writer = GenerationWriter(gen)
        try:
            if gen.cancelled:
                gen.result.finish = "cancelled"
                return
            self._stream(gen, writer)
        except Exception as exc:  # a broken generation must not kill the worker
            writer.fail(str(exc))
            self._llm.reset()  # the KV cache may hold a half-evaluated batch
        finally:
            self._watch_abort(None)
            writer.close()

    def _stream(self, gen: Generation, writer: GenerationWriter) -> None:
        """Evaluate the prompt (reusing the cached prefix unless cold), then sample token by
        token. Driven directly rather than through `Llama.generate`: one sampler chain per
        reply, no per-token keyword plumbing, and a cancel check between tokens."""
        llm, req, result = self._llm, gen.request, gen.result
        tokens = self.request_tokens(req)
        if not tokens:
            raise ValueError("empty prompt")
        result.prompt_tokens = len(tokens)
        reuse = self._prepare_cache(req.cache_key, tokens, req.cold)
        result.reused_tokens = reuse
        banned = self._text.eog_tokens() if req.ban_eos else ()
        sampler = sampler_chain(req.sampling, req.seed, llm.n_vocab(), banned)
        self._watch_abort(gen._cancel)
        evaluated = time.perf_counter()
        llm.eval(tokens[reuse:])
        self._prompt_rate.add(len(tokens) - reuse, time.perf_counter() - evaluated)
        self._watch_abort(None)
        vocab = llm._model.vocab
        ctx = llm._ctx
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        max_tokens = req.sampling.max_tokens
        try:
            while True:
                if gen.cancelled:
                    result.finish = "cancelled"
                    break
                token = sampler.sample(ctx, -1)
                writer.first_token()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    result.finish = "stop"
                    break
                if writer.write(decoder.decode(llm.detokenize([token]))):
                    result.finish = "stop"
                    break
                if result.generated_tokens >= max_tokens:
                    result.finish = "length"
                    break
                if llm.n_tokens >= self.info.n_ctx:
                    result.finish = "length"  # the context is full
                    break
                llm.eval([token])
        finally:
            sampler.close()

    # -- per-channel KV state --------------------------------------------------------------------

    def _prepare_cache(self, key: str | None, tokens: list[int], cold: bool) -> int:
        """Make the resident sequence the best starting point for `tokens`; return how many
        prompt tokens need no evaluation. The channel that was resident is saved first (if it
        is another one), so its next turn can start warm too."""
        llm = self._llm
        if key != self._resident_key:
            self._stash_resident()
            snapshot = self._cache.peek(key) if key is not None else None
            resident = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
            if snapshot is not None and not cold:
                saved = common_prefix(snapshot.tokens, tokens) - resident
                if saved > 0 and restore_wins(
                    snapshot.nbytes, saved, self._copy_rate, self._prompt_rate
                ):
                    self._restore(key)  # type: ignore[arg-type]
            if key is not None:
                self._cache.drop(key)  # the resident sequence becomes the fresh copy
            self._resident_key = key
        if cold:
            llm.n_tokens = 0
        cached = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
        # At least one token is evaluated so that the logits belong to this prompt.
        reuse = min(cached, len(tokens) - 1)
        llm.n_tokens = reuse  # eval() drops cached cells past this point
        return reuse

    def _stash_resident(self) -> None:
        llm, key = self._llm, self._resident_key
        if key is None or llm.n_tokens < MIN_SNAPSHOT_TOKENS:
            return
        started = time.perf_counter()
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if written:
            tokens = tuple(int(t) for t in llm.input_ids[: llm.n_tokens])
            self._cache.put(key, Snapshot(tokens, bytes(memoryview(buffer)[:written])))
            self._copy_rate.add(written, time.perf_counter() - started)

    def _restore(self, key: str) -> None:
        llm = self._llm
        snapshot = self._cache.take(key)
        if snapshot is None:
            return
        started = time.perf_counter()
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        data = (ctypes.c_uint8 * snapshot.nbytes).from_buffer_copy(snapshot.data)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, data, snapshot.nbytes, 0):
            n = len(snapshot.tokens)
            llm.input_ids[:n] = snapshot.tokens
            llm.n_tokens = n
            self._copy_rate.add(snapshot.nbytes, time.perf_counter() - started)
        else:  # unusable (should not happen): start from scratch
            llm._ctx.kv_cache_seq_rm(0, 0, -1)
            llm.n_tokens = 0

    async def forget(self, key: str | None = None) -> None:
        """Drop cached KV state: of one channel, or of every channel (privacy: !reset and
        !forget must not leave the conversation in memory)."""
        await self._call(lambda: self._forget(key))

    def _forget(self, key: str | None) -> None:
        if key is None:
            self._cache.clear()
        else:
            self._cache.drop(key)
        if key is None or key == self._resident_key:
            self._llm._ctx.kv_cache_clear()
            self._llm.n_tokens = 0
            self._resident_key = None

    def cache_state(self, key: str) -> str:
        if key == self._resident_key and self._llm.n_tokens:
            return f"warm ({self._llm.n_tokens:,} tokens resident)"
        snapshot = self._cache.peek(key)
        if snapshot is not None:
            return f"warm ({len(snapshot.tokens):,} tokens saved, {snapshot.nbytes / 2**20:.1f} MB)"
        return "cold"


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
