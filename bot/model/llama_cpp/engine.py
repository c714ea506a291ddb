"""The step loop of the model thread: continuous batching.

Each step is one llama_decode holding the next token of every generating reply and at most
`step_tokens − parallel` prompt tokens, shortest prompt first (chunked prefill; which prompts
share a step: bot.model.llama_cpp.prefill): a long new prompt delays the others by a chunk. Up to
`parallel` replies run at once; more wait in order. A reply is admitted only while the pool's
cells cover what every running reply may still need, so running replies never run out of room;
idle resident channels fill the rest of the pool and are evicted when llama_decode finds no
room, or parked as snapshots while replies generate (bot.model.llama_cpp.pool). Cancellation
is checked between steps (llama.cpp's abort callback would abort everyone's step).

A fixed-seed reply decodes alone, in a context of its own (bot.model.llama_cpp.solo, which
says what that costs), in turn with the shared steps. A picture in a prompt is evaluated
between two steps, by a decode of its own (bot.model.llama_cpp.vision). Channels whose replies
ended have their next prompts read as far as they are known while no reply waits for its first
token (bot.model.llama_cpp.ahead).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence

import llama_cpp

from bot.model.footprint import Accountant
from bot.model.llama_cpp.ahead import MOST_PER_STEP, MOST_WHILE_BUSY, Opening, ReadAhead
from bot.model.llama_cpp.batch import NO_KV_ROOM, StepBatch
from bot.model.llama_cpp.lane import Lane
from bot.model.llama_cpp.loader import LoadedModel
from bot.model.llama_cpp.pictures import Pictures
from bot.model.llama_cpp.pool import KvPool
from bot.model.llama_cpp.prefill import prompt_parts
from bot.model.llama_cpp.sampler import ReplySampler
from bot.model.llama_cpp.solo import SoloLane
from bot.model.llama_cpp.stream import Stream, TokenRate, cells_needed
from bot.model.llama_cpp.vision import Vision
from bot.model.types import EngineStats, Generation, GenerationRequest, Outbox
from bot.model.writer import GenerationWriter, finish_unstarted


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
        footprint: Accountant,
        vision: Vision | None = None,
        opening: Opening | None = None,
    ) -> None:
        self._loaded = loaded
        self._vocab = loaded.vocab
        self._model = loaded.model
        self.pool = pool
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.pool_tokens = loaded.pool_tokens
        # Idle channels' cells that may stay in the pool while replies generate (KvPool.park):
        # none, since each one costs every step (bench.idle_cells, docs/performance.md).
        self.idle_cells = 0
        step_tokens = loaded.shape.step_tokens
        self.shared = Lane(loaded.ctx, StepBatch(step_tokens), pool, step_tokens - parallel)
        self.solo: SoloLane | None = None  # opened at the first fixed-seed reply
        self._prompt_of = prompt_of
        self._end_tokens = end_tokens
        self.pictures = Pictures(vision)  # prompts with pictures, and their evaluation
        self.waiting: deque[tuple[Generation, list[int]]] = deque()
        self.streams: list[Stream] = []
        self.outbox = Outbox()  # the replies' text, handed to the event loop once per step
        self.ahead = ReadAhead(opening, n_ctx)  # idle channels' next prompts (ahead.py)
        self.steps = 0
        self._turn = 0
        self._last_step = 0  # tokens in the last step
        self._rate = TokenRate()
        self.footprint = footprint  # each reply's time and energy on the model
        self.stats = EngineStats(slots=parallel, energy_source=footprint.source.name)

    @property
    def busy(self) -> bool:
        return bool(self.streams or self.waiting)

    def submit(self, generation: Generation) -> None:
        """Queue a reply; it starts when a slot and room in the pool are free."""
        try:
            prompt = self._prompt(generation)
        except Exception as exc:
            self.pictures.drop(generation)
            finish_unstarted(generation, str(exc))
            return
        self.waiting.append((generation, prompt))

    def step(self) -> None:
        """Admit what fits, then one llama_decode for the next group of replies."""
        try:
            self.honour_forgets()
            for stream in [s for s in self.streams if s.generation.cancelled]:
                stream.writer.result.finish = "cancelled"
                self._end(stream)
            if self.streams or self.waiting:
                keep = {generation.request.cache_key for generation, _ in self.waiting}
                self.pool.park(self.idle_cells, keep)
            self._admit()
            group = self._next_group()
            if group:
                try:
                    if failed := self.pictures.evaluate_next(group, self.footprint):
                        self._fail(*failed)  # that reply's failure, not the others'
                        group.remove(failed[0])
                    if group:
                        self._run(group)
                except Exception as exc:  # a broken step must not kill the worker
                    for stream in group:
                        self._fail(stream, str(exc))
        finally:
            if not self.streams:
                self.footprint.idle()
            self.outbox.send()
            self._publish()

    def honour_forgets(self) -> None:
        """Drop the KV state of channels forgotten since the last step, wherever it is."""
        forget_all, keys = self.pool.honour_forgets()
        self.ahead.forget(forget_all, keys)
        if self.solo is not None and (forget_all or keys):
            self.solo.forget(forget_all, keys)

    @property
    def ahead_due(self) -> bool:
        """Reading ahead, or saving ahead the channel evicted next, is due, and no reply waits
        to start or to read its prompt."""
        prompts = self.waiting or any(s.prefilling for s in self.streams)
        return not prompts and self.ahead.due(self.pool)

    def read_ahead(self) -> None:
        """A step reading channels' next prompts as far as they are known (ahead.py); a small
        one between the steps of replies generating."""
        most = MOST_WHILE_BUSY if self.streams else MOST_PER_STEP
        ctx, batch = self.shared.context.ctx, self.shared.batch
        try:
            self.ahead.read(self.pool, batch, ctx, self.footprint, self.honour_forgets, most)
        finally:
            if not self.streams:
                self.footprint.idle()

    def close(self) -> None:
        """Shutting down: every reply ends as cancelled."""
        for stream in list(self.streams):
            stream.generation.cancel()
            stream.writer.result.finish = "cancelled"
            self._end(stream)
        while self.waiting:
            generation, _ = self.waiting.popleft()
            generation.cancel()
            self.pictures.drop(generation)
            finish_unstarted(generation, None)
        self.outbox.send()
        self.shared.batch.close()
        if self.solo is not None:
            self.solo.close()
        self.pictures.close()

    # -- admission -------------------------------------------------------------------------------

    def _prompt(self, generation: Generation) -> list[int]:
        prompt = self.pictures.prompt(generation, self._prompt_of)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise ValueError(f"the prompt ({len(prompt)} tokens) does not fit n_ctx ({self.n_ctx})")
        return prompt

    def _admit(self) -> None:
        """Start waiting replies in order while slots are free. One waiting for room in the
        pool holds back those after it; a fixed-seed one waiting for its lane does not."""
        for entry in list(self.waiting):
            if len(self.streams) >= self.parallel:
                return
            generation, prompt = entry
            if generation.cancelled:
                self.waiting.remove(entry)
                self.pictures.drop(generation)
                finish_unstarted(generation, None)
                continue
            if generation.request.cold:
                if self.solo is not None and self.solo.busy:
                    continue
            elif self._shared_reserved() + cells_needed(generation, prompt, self.n_ctx) > (
                self.pool_tokens
            ) and any(not s.solo for s in self.streams):
                return  # waits until running replies leave room
            self.waiting.remove(entry)
            generation._outbox = self.outbox
            writer = GenerationWriter(generation)
            try:
                self.streams.append(self._start(generation, writer, prompt))
            except Exception as exc:
                self.pictures.drop(generation)
                writer.fail(str(exc))
                writer.close()

    def _start(self, generation: Generation, writer: GenerationWriter, prompt: list[int]) -> Stream:
        request = generation.request
        banned = self._end_tokens() if request.ban_eos else ()
        sampler = ReplySampler(request.sampling, request.seed, self._model.n_vocab(), banned)
        try:
            lane = self._solo_lane() if request.cold else self.shared
            resident, reuse = lane.sequences.claim(request.cache_key, prompt, request.cold)
        except Exception:
            sampler.close()
            raise
        self.ahead.drop(request.cache_key)
        try:
            images = self.pictures.take(generation)
            stream = Stream(
                generation, writer, prompt, lane, resident, reuse, sampler, self.n_ctx, images
            )
        except Exception:
            sampler.close()
            lane.sequences.release(resident)
            raise
        if not stream.solo and (spent := self.ahead.spent.pop(request.cache_key or "", None)):
            self.footprint.carry(stream, spent)
        return stream

    def _solo_lane(self) -> Lane:
        if self.solo is None:
            self.solo = SoloLane(self._model, self.n_ctx, self._loaded.shape)
        return self.solo.lane

    def _shared_reserved(self) -> int:
        return sum(s.reserved for s in self.streams if not s.solo)

    def _next_group(self) -> list[Stream]:
        """The replies of this step: all that share steps, or the fixed-seed one, in turn."""
        shared = [s for s in self.streams if not s.solo]
        groups = ([shared] if shared else []) + [[s] for s in self.streams if s.solo]
        if not groups:
            return []
        self._turn = (self._turn + 1) % len(groups)
        return groups[self._turn]

    # -- one step --------------------------------------------------------------------------------

    def _run(self, group: list[Stream]) -> None:
        lane = group[0].lane
        batch = lane.batch
        planned: list[tuple[Stream, Sequence[int], bool]] = [
            (s, (s.next_token,), True) for s in group if s.next_token is not None
        ]
        reading = [s for s in group if s.prefilling]
        ready = [s.prompt_part(lane.chunk) for s in reading]  # empty: a picture is next
        left = [len(s.prompt) - s.evaluated for s in reading]
        counts = prompt_parts(left, [len(r) for r in ready], lane.chunk)
        for stream, part, count, rest in zip(reading, ready, counts, left, strict=True):
            if count:
                planned.append((stream, part[:count], count == rest))
        prompt_tokens = sum(counts)
        if not planned:
            return
        batch.clear()
        outputs: list[tuple[Stream, int]] = []
        # In sequence order: with a window per slot llama.cpp computes a step as one graph only
        # while rows come in consecutive sequence ids (split_equal), else a graph per break.
        for stream, tokens, wanted in sorted(planned, key=lambda plan: plan[0].seq):
            index = batch.add_run(tokens, stream.position, stream.seq, wanted)
            if wanted:
                outputs.append((stream, index))
        self.footprint.before_step()
        cpu_started = time.process_time()
        started = time.perf_counter()
        self._decode(lane)
        wall_s = time.perf_counter() - started
        self.pool.prompt_rate.add(prompt_tokens, wall_s)
        shares: dict[Hashable, int] = {}  # replies by their tokens in this step
        for stream, part, _ in planned:
            shares[stream] = shares.get(stream, 0) + len(part)
        self.footprint.step(shares, time.process_time() - cpu_started, wall_s)
        self.steps += 1
        self._last_step = batch.size
        for stream, tokens, _ in planned:
            stream.evaluated_part(tokens)
        for stream, index in outputs:
            try:
                token = stream.sampler.sample(lane.context, index)
                ended = stream.accept(token, self._is_end, self._piece)
            except Exception as exc:  # one reply's failure is not the others'
                self._fail(stream, str(exc))
                continue
            self._rate.tokens += 1
            if ended:
                self._end(stream)

    def _decode(self, lane: Lane) -> None:
        while (code := lane.batch.decode(lane.context.ctx)) == NO_KV_ROOM:
            if not lane.sequences.evict():
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
        spent = self.footprint.finish(stream)
        result = stream.writer.result
        result.model_s, result.energy_j = spent.model_s, spent.joules
        result.energy_source = self.footprint.source.name
        stream.sampler.close()
        if stream.images is not None:
            stream.images.close()
        stream.lane.sequences.release(stream.resident)
        request, text = stream.generation.request, stream.writer.text  # before it is seen to end
        if result.finish in ("stop", "length") and not (
            stream.solo or request.images or stream.resident.forgotten
        ):
            self.ahead.note(request.cache_key, stream.resident, request.messages, text)
        stream.writer.close()

    def _fail(self, stream: Stream, error: str) -> None:
        """The reply broke: its sequence may hold a half-evaluated batch, so it goes too."""
        if stream not in self.streams:
            return
        stream.writer.fail(error)
        stream.lane.sequences.trim(stream.resident, 0)
        self._end(stream)

    # -- figures ---------------------------------------------------------------------------------
    def _publish(self) -> None:
        self.stats = EngineStats(
            slots_busy=len(self.streams),
            batch_size=self._last_step,
            tokens_per_s=self._rate.renew(bool(self.streams)),
            slots=self.parallel,
            steps=self.steps,
            resident=len(self.pool.residents),
            energy_source=self.footprint.source.name,
        )
