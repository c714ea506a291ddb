"""What every backend speaks: the request, the running generation and its result, model facts.

Backend-neutral: nothing here imports llama_cpp, so the core can use these types without
loading the model library.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.personas import Sampling

FinishReason = Literal["stop", "length", "cancelled", "error"]

# Turn markers of common templates: if one shows up as text, the model is writing the next
# speaker's turn.
TURN_MARKERS = ("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|eot_id|>", "</s>")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the model is and how it runs: name, size, context window, threads."""

    path: Path
    name: str
    description: str  # llama.cpp's own summary, e.g. "qwen2 1.5B Q4_K - Medium"
    n_params: int
    size_bytes: int
    n_ctx: int
    n_threads: int
    quantization: str = ""  # e.g. "Q4_K_M", from the GGUF's file type
    runs_on: str = ""  # e.g. "CPU, 4 threads", as llama.cpp placed it ("": not known here)
    kv_type: str = ""  # the KV cache's type as llama.cpp made it, e.g. "q8_0"
    layers: int = 0  # as llama.cpp places them (the output layer counts as one)
    sees_images: bool = False  # a projector is loaded and the engine evaluates images
    # With a projector: the KV cells one picture takes (fixed for LLaVA-style projectors) and
    # the side a picture is shrunk to before the model sees it (0: no projector).
    image_tokens: int = 0
    image_side_px: int = 0
    offloaded_layers: int = 0  # of those, on a GPU

    @property
    def params_text(self) -> str:
        n = self.n_params
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A picture ready for a projector: packed RGB rows (width × height × 3 bytes), the format
    it was posted in, and a content hash (its bitmap id: the KV cache knows it again by it).
    bot/images.py makes it."""

    width: int
    height: int
    rgb: bytes
    source_format: str
    digest: str


@dataclass(frozen=True, slots=True)
class EngineStats:
    """What the model worker is doing, for metrics and !status: slots in use, the tokens of
    its last step (one llama_decode), and the replies' tokens per second together."""

    slots_busy: int = 0
    batch_size: int = 0
    tokens_per_s: float = 0.0
    slots: int = 1
    steps: int = 0  # llama_decode calls so far
    resident: int = 0  # channels whose KV is resident in the pool
    energy_source: str = ""  # bot.model.energy: "rapl", "nvml" or "estimated"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: the conversation, how to sample, where to stop."""

    messages: Sequence[dict[str, str]]
    sampling: Sampling
    seed: int  # resolved: a fixed seed, or a freshly drawn one
    stop: tuple[str, ...] = ()
    # A reply that must be reproducible (a fixed seed): evaluated from scratch and decoded
    # alone, so the same seed and history give the same text (where a sequence's cells lie
    # and the batches around it change the logits slightly).
    cold: bool = False
    # For benchmarks: end-of-generation tokens can never be drawn (every reply is max_tokens).
    ban_eos: bool = False
    # The rendered, tokenized messages, when the caller already has them (it measured them).
    prompt: Sequence[int] | None = None
    # Whose conversation this is (the channel): its KV state is kept warm between turns.
    cache_key: str | None = None
    # Pictures the model sees (needs ModelInfo.sees_images): index into `messages` → the
    # pictures shown at the start of that message, before its text.
    images: Mapping[int, Sequence[DecodedImage]] = field(default_factory=dict)


@dataclass(slots=True)
class GenerationResult:
    """How a generation went: its text, why it ended, token counts and timings."""

    text: str = ""
    finish: FinishReason = "stop"
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    seed: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    error: str | None = None
    # Its footprint (bot.model.footprint): time in the model's steps that held its tokens, and
    # the energy attributed to it; None where the backend cannot tell (a remote server).
    model_s: float = 0.0
    energy_j: float | None = None
    energy_source: str = ""  # "rapl", "nvml" or "estimated" (bot.model.energy)


@dataclass(eq=False)
class Generation:
    """A running generation: iterate it for text deltas; `result` is set when it ends."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    result: GenerationResult = field(default_factory=GenerationResult)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _outbox: Outbox | None = None  # set by a worker that hands over deltas once per step
    _ended: bool = False  # the end was read (with the last text, by a reader that may stop)

    def cancel(self) -> None:
        """Stop as soon as possible, also in the middle of evaluating a long prompt."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # Called from the worker thread.
    def _emit(self, delta: str | None) -> None:
        if self._outbox is not None:
            self._outbox.put(self, delta)
            return
        try:
            self.loop.call_soon_threadsafe(self._deltas.put_nowait, delta)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancel.set()

    def _done(self) -> None:
        self._emit(None)

    async def __aiter__(self) -> AsyncIterator[str]:
        while not self._ended:
            delta = await self._deltas.get()
            # Coalesce what arrived meanwhile: fewer, larger updates for the adapter.
            parts = [delta] if delta is not None else []
            while delta is not None and not self._deltas.empty():
                delta = self._deltas.get_nowait()
                if delta is not None:
                    parts.append(delta)
            self._ended = delta is None  # before the yield: its reader may stop there
            if parts:
                yield "".join(parts)


class Outbox:
    """Text of several generations, handed to their event loop in one wake-up: a worker that
    steps many replies at once sends once per step rather than once per token, and a step
    whose text the loop has not taken yet rides along with it (no wake-up of its own)."""

    def __init__(self) -> None:
        self._items: list[tuple[Generation, str | None]] = []
        self._lock = threading.Lock()
        # Per loop, the text handed over that it has not taken yet.
        self._unread: dict[asyncio.AbstractEventLoop, list[tuple[Generation, str | None]]] = {}

    def put(self, generation: Generation, delta: str | None) -> None:
        self._items.append((generation, delta))

    def send(self) -> None:
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Generation, str | None]]] = {}
        for generation, delta in items:
            by_loop.setdefault(generation.loop, []).append((generation, delta))
        for loop, batch in by_loop.items():
            with self._lock:
                unread = self._unread.get(loop)
                if unread is not None and not loop.is_closed():
                    unread.extend(batch)  # a wake-up is on its way: it takes these too
                    continue
                self._unread[loop] = batch
            try:
                loop.call_soon_threadsafe(self._deliver, loop)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                with self._lock:
                    self._unread.pop(loop, None)
                for generation, _ in batch:
                    generation._cancel.set()

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        """On `loop`: everything handed over to it so far, in order."""
        with self._lock:
            batch = self._unread.pop(loop)
        for generation, delta in batch:
            generation._deltas.put_nowait(delta)


class StopScanner:
    """Finds stop strings in streamed text and holds back a tail that could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._hold = max((len(s) - 1 for s in self.stops), default=0)
        self.text = ""
        self._sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add text; return (text safe to show now, whether a stop string was hit)."""
        scan_from = max(0, len(self.text) - self._hold)
        self.text += piece
        hits = [i for s in self.stops if (i := self.text.find(s, scan_from)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self._release(len(self.text)), True
        safe = len(self.text)
        for stop in self.stops:
            # A tail to hold back starts with the stop's first character: mostly there is none.
            if len(stop) == 1 or stop[0] not in self.text[1 - len(stop) :]:
                continue
            for n in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:n]):
                    safe = min(safe, len(self.text) - n)
                    break
        return self._release(safe), False

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        out = self.text[self._sent : upto] if upto > self._sent else ""
        self._sent = max(self._sent, upto)
        return out


def draw_seed() -> int:
    """A fresh seed per reply (not derived from the last one, so restarts do not repeat)."""
    return random.SystemRandom().randrange(0, 2**32 - 1)
