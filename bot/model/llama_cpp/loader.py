"""Opening a GGUF for batched generation: the weights, and one context whose KV cache is laid
out in one of two ways: a pool shared by every sequence (`kv_unified`), or a window per slot
(llama.cpp splits n_ctx evenly between the sequences, a stream each).

Built from llama-cpp-python's lower layer rather than `Llama`: `Llama` sets neither `n_seq_max`
nor `kv_unified`. In a pool a token attends over the cells of every resident sequence (masked,
but computed), so the pool keeps more channels warm and the windows generate faster together
(docs/performance.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import llama_cpp
from llama_cpp._internals import LlamaContext, LlamaModel
from llama_cpp._logger import llama_log_callback, set_verbose

from bot.model.llama_cpp.placement import Attention, Offload, Placement, read_placement


@dataclass(frozen=True, slots=True)
class PoolShape:
    """How the context is laid out: KV cells for every sequence, how many sequences, whether
    they share the cells (a pool) or each has pool_tokens / n_seq_max of them (a window), and
    how many tokens one step (one llama_decode) may hold."""

    pool_tokens: int
    n_seq_max: int
    step_tokens: int
    n_threads: int
    attention: Attention = field(default_factory=Attention)
    offloaded: bool = False  # layers run on a GPU: flash_attn "auto" is llama.cpp's to decide
    unified: bool = True


# What llama.cpp logs while a muted_log() is open: read for its Placement. The log callback is
# process-wide, so one load at a time.
_captured: list[str] = []
_capturing = threading.Lock()


@llama_cpp.llama_log_callback
def _quiet(_level: int, text: bytes, _data: ctypes.c_void_p) -> None:
    _captured.append(text.decode("utf-8", errors="replace"))


@llama_cpp.llama_log_callback
def _without_room_warnings(level: int, text: bytes, data: ctypes.c_void_p) -> None:
    # llama_decode warns each time the pool is full; the engine then evicts an idle channel
    # and tries again, which is how the pool is meant to fill.
    if b"failed to find a memory slot" not in text:
        llama_log_callback(level, text, data)


@contextlib.contextmanager
def muted_log() -> Iterator[list[str]]:
    """llama.cpp narrates every load on stderr, and warns that a pool larger than the model's
    training context might overflow it (each sequence stays within n_ctx, so it cannot). The
    lines are kept instead (the list yielded), until the block ends."""
    with _capturing:
        _captured.clear()
        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
        try:
            yield _captured
        finally:
            llama_cpp.llama_log_set(_without_room_warnings, ctypes.c_void_p(0))
            _captured.clear()


def route_mtmd_log(lib: ModuleType, capture: bool) -> None:
    """libmtmd (bot.model.llama_cpp.projector) logs on its own, not through llama_log_set:
    into muted_log's lines while `capture` (a projector loading), else its warnings and
    errors only, as llama.cpp's."""
    callback = _quiet if capture else _without_room_warnings
    lib.mtmd_log_set(callback, ctypes.c_void_p(0))
    lib.mtmd_helper_log_set(callback, ctypes.c_void_p(0))


def open_context(model: LlamaModel, shape: PoolShape) -> tuple[LlamaContext, Placement]:
    """A context on the loaded weights, laid out as `shape` says, and what llama.cpp logged of
    its attention (flash attention, KV types)."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = shape.pool_tokens
    params.n_batch = shape.step_tokens
    params.n_ubatch = shape.step_tokens  # a step is one ubatch: one graph computation
    params.n_seq_max = shape.n_seq_max
    # A step asks for at most one token's logits per sequence; left at its default (n_batch),
    # llama.cpp would reserve logits for every token of a step (~170 MB at a 150k vocabulary).
    params.n_outputs_max = shape.n_seq_max
    params.kv_unified = shape.unified
    # Measured on CPU: with flash attention a token's logits change with the batch around it
    # (by up to 0.3 on the bench model; 0.0 without), and four sequences decoded at once ran
    # at a quarter of the speed they reach without it: off unless asked, offloaded or needed.
    shape.attention.apply(params, shape.offloaded)
    params.n_threads = shape.n_threads
    params.n_threads_batch = shape.n_threads
    with muted_log() as lines:
        ctx = LlamaContext(model=model, params=params, verbose=False)
        return ctx, read_placement(lines)


class LoadedModel:
    """The weights and the context of the KV pool, freed together (the context first)."""

    def __init__(
        self, path: Path, shape: PoolShape, repack: bool = True, offload: Offload | None = None
    ) -> None:
        set_verbose(False)  # afterwards llama.cpp's log shows warnings and errors only
        params = llama_cpp.llama_model_default_params()
        # Repacking weights for the CPU (AMX, interleaved quants) is llama.cpp's default; a VM
        # that reports AMX without allowing it needs it off (bench/ offers --no-repack).
        params.use_extra_bufts = repack
        split = (offload or Offload()).apply(params)
        with muted_log() as lines:
            self.model = LlamaModel(path_model=str(path), params=params, verbose=False)
            placed = read_placement(lines)
        del split  # read during the load only
        shape = dataclasses.replace(shape, offloaded=placed.offloaded > 0)
        try:
            self.ctx, attention = open_context(self.model, shape)
        except Exception:
            self.model.close()
            raise
        self.placement = placed.merged(attention)
        self.shape = shape
        self.pool_tokens = llama_cpp.llama_n_ctx(self.ctx.ctx)  # as llama.cpp rounded it
        self.vocab = self.model.vocab

    @property
    def memory(self) -> llama_cpp.llama_memory_t:
        return self.ctx.memory

    def close(self) -> None:
        self.ctx.close()
        self.model.close()


class VocabView:
    """The loaded model's vocabulary in the shape of the part of `Llama` that
    bot.model.template.ChatText reads, so rendering and counting need no second copy of it."""

    def __init__(self, model: LlamaModel) -> None:
        self._model = model
        self.metadata = model.metadata()

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(self._model.tokenize(text, add_bos, special))

    def detokenize(
        self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False
    ) -> bytes:
        return self._model.detokenize(tokens, special=special)

    def token_bos(self) -> int:
        return self._model.token_bos()

    def token_eos(self) -> int:
        return self._model.token_eos()

    def n_vocab(self) -> int:
        return self._model.n_vocab()
