"""The step loop of the model thread: continuous batching.

Each step is one llama_decode holding the next token of every generating reply plus a bounded
chunk of prompt for replies still being evaluated (chunked prefill: at most `step_tokens −
parallel` prompt tokens), so a long new prompt delays the others by one chunk at most. Up to
`parallel` replies run at once; more wait in order. A reply is admitted only while the pool's
cells cover what every running reply may still need, so running replies never run out of room;
idle resident channels fill the rest of the pool and are evicted when llama_decode finds no
room. Cancellation is checked between steps (llama.cpp's abort callback would abort everyone's
step).

A fixed-seed reply decodes alone: its steps hold only its own sequence, in the same chunks
every time, so the same seed and history give the same text while other channels generate.
Its cost: a step of its own (a whole llama_decode per token instead of ~0.65 ms of a shared
one), taken in turn with the shared steps, which then come half as often.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import llama_cpp
import structlog

from bot.model.llama_cpp.batch import NO_KV_ROOM, StepBatch
from bot.model.llama_cpp.loader import LoadedModel
from bot.model.llama_cpp.pool import KvPool
from bot.model.llama_cpp.sampler import sampler_chain
from bot.model.llama_cpp.stream import Stream
from bot.model.types import EngineStats, Generation, GenerationRequest
from bot.model.writer import GenerationWriter

log = structlog.get_logger(__name__)

# How often the aggregate tokens/s figure is renewed.
RATE_WINDOW_S = 1.0


class Engine:
    """Runs the replies' steps on the model thread; everything here is called from it."""

    def __init__(
        self,
        loaded: LoadedModel,
        pool: KvPool,
        parallel: int,
        n_ctx: int,
        prompt_of: Callable[[GenerationRequest], list[int]],
        end_tokens: Callable[[], Sequence[int]],
    ) -> None:
        self._context = loaded.ctx
        self._ctx = loaded.ctx.ctx
        self._vocab = loaded.vocab
        self._model = loaded.model
        self.pool = pool
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.pool_tokens = loaded.pool_tokens
        self.chunk = loaded.shape.step_tokens - parallel
        self.batch = StepBatch(loaded.shape.step_tokens)
        self._prompt_of = prompt_of
        self._end_tokens = end_tokens
        self.waiting: deque[tuple[Generation, list[int]]] = deque()
        self.streams: list[Stream] = []
        self.steps = 0
        self._turn = 0
        self._window = (time.perf_counter(), 0)  # (since, tokens generated since)
        self._rate = 0.0
        self.stats = EngineStats(slots=parallel)

    @property
    def busy(self) -> bool:
        return bool(self.streams or self.waiting)

    def submit(self, generation: Generation) -> None:
        """Queue a reply; it starts when a slot and room in the pool are free."""
        try:
            prompt = self._prompt(generation.request)
        except Exception as exc:
            writer = GenerationWriter(generation)
            writer.fail(str(exc))
            writer.close()
            return
        self.waiting.append((generation, prompt))

    def step(self) -> None:
        """Admit what fits, then one llama_decode for the next group of replies."""
        self.pool.honour_forgets()
        for stream in [s for s in self.streams if s.generation.cancelled]:
            stream.writer.result.finish = "cancelled"
            self._end(stream)
        self._admit()
        group = self._next_group()
        if group:
            try:
                self._run(group)
            except Exception as exc:  # a broken step must not kill the worker
                for stream in group:
                    self._fail(stream, str(exc))
        self._publish()

    def close(self) -> None:
        """Shutting down: every reply ends as cancelled."""
        for stream in list(self.streams):
            stream.generation.cancel()
            stream.writer.result.finish = "cancelled"
            self._end(stream)
        while self.waiting:
            generation, _ = self.waiting.popleft()
            generation.cancel()
            writer = GenerationWriter(generation)
            writer.result.finish = "cancelled"
            writer.close()
        self.batch.close()

    # -- admission -------------------------------------------------------------------------------

    def _admit(self) -> None:
        while self.waiting and len(self.streams) < self.parallel:
            generation, prompt = self.waiting[0]
            if generation.cancelled:
                self.waiting.popleft()
                writer = GenerationWriter(generation)
                writer.result.finish = "cancelled"
                writer.close()
                continue
            need = min(self.n_ctx, len(prompt) + generation.request.sampling.max_tokens)
            if self.streams and self._reserved() + need > self.pool_tokens:
                return  # waits until running replies leave room
            self.waiting.popleft()
            writer = GenerationWriter(generation)
            try:
                self.streams.append(self._start(generation, writer, prompt))
            except Exception as exc:
                writer.fail(str(exc))
                writer.close()

    def _prompt(self, request: GenerationRequest) -> list[int]:
        prompt = self._prompt_of(request)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise ValueError(f"the prompt ({len(prompt)} tokens) does not fit n_ctx ({self.n_ctx})")
        return prompt

    def _start(self, generation: Generation, writer: GenerationWriter, prompt: list[int]) -> Stream:
        request = generation.request
        banned = self._end_tokens() if request.ban_eos else ()
        sampler = sampler_chain(request.sampling, request.seed, self._model.n_vocab(), banned)
        try:
            resident, reuse = self.pool.claim(request.cache_key, prompt, request.cold)
        except Exception:
            sampler.close()
            raise
        return Stream(generation, writer, prompt, resident, reuse, sampler, self.n_ctx)

    def _reserved(self) -> int:
        return sum(s.reserved for s in self.streams)

    def _next_group(self) -> list[Stream]:
        """The replies of this step: all that share steps, or one fixed-seed reply, in turn."""
        shared = [s for s in self.streams if not s.solo]
        groups = ([shared] if shared else []) + [[s] for s in self.streams if s.solo]
        if not groups:
            return []
        self._turn = (self._turn + 1) % len(groups)
        return groups[self._turn]

    # -- one step --------------------------------------------------------------------------------

    def _run(self, group: list[Stream]) -> None:
        batch = self.batch
        batch.clear()
        planned: list[tuple[Stream, Sequence[int]]] = []
        outputs: list[tuple[Stream, int]] = []
        for stream in group:
            if stream.next_token is not None:
                index = batch.add(stream.next_token, stream.position, stream.seq, True)
                planned.append((stream, (stream.next_token,)))
                outputs.append((stream, index))
        budget = self.chunk
        prompt_tokens = 0
        for stream in group:
            if stream.prefilling and budget > 0:
                part = stream.prompt_part(budget)
                last = stream.evaluated + len(part) == len(stream.prompt)
                index = batch.add_run(part, stream.position, stream.seq, last)
                planned.append((stream, part))
                if last:
                    outputs.append((stream, index))
                budget -= len(part)
                prompt_tokens += len(part)
        if not planned:
            return
        started = time.perf_counter()
        self._decode(group)
        self.pool.prompt_rate.add(prompt_tokens, time.perf_counter() - started)
        self.steps += 1
        for stream, tokens in planned:
            stream.evaluated_part(tokens)
        for stream, index in outputs:
            try:
                token = stream.sampler.sample(self._context, index)
                ended = stream.accept(token, self._is_end, self._piece)
            except Exception as exc:  # one reply's failure is not the others'
                self._fail(stream, str(exc))
                continue
            self._count_token()
            if ended:
                self._end(stream)

    def _decode(self, group: list[Stream]) -> None:
        while (code := self.batch.decode(self._ctx)) == NO_KV_ROOM:
            if not self.pool.evict():
                raise RuntimeError("the KV pool is full")
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def _is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _piece(self, token: int) -> bytes:
        return self._model.detokenize([token])

    # -- endings ---------------------------------------------------------------------------------

    def _end(self, stream: Stream) -> None:
        self.streams.remove(stream)
        stream.sampler.close()
        self.pool.release(stream.resident)
        stream.writer.close()

    def _fail(self, stream: Stream, error: str) -> None:
        """The reply broke: its sequence may hold a half-evaluated batch, so it goes too."""
        if stream not in self.streams:
            return
        stream.writer.fail(error)
        self.pool.trim(stream.resident, 0)
        self._end(stream)

    # -- figures ---------------------------------------------------------------------------------

    def _count_token(self) -> None:
        since, tokens = self._window
        self._window = (since, tokens + 1)

    def _publish(self) -> None:
        now = time.perf_counter()
        since, tokens = self._window
        if not self.streams:
            self._rate, self._window = 0.0, (now, 0)
        elif now - since >= RATE_WINDOW_S:
            self._rate, self._window = tokens / (now - since), (now, 0)
        self.stats = EngineStats(
            slots_busy=len(self.streams),
            batch_size=self.batch.size,
            tokens_per_s=self._rate,
            slots=self.parallel,
            steps=self.steps,
            resident=len(self.pool.residents),
        )
