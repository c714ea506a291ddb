"""Pictures in the step loop: a prompt with pictures as KV cells, and each picture evaluated
by a decode of its own.

A prompt with pictures is still a list of cells, one per KV cell: the text's tokens, rendered
and tokenized exactly as without pictures (bot.model.template), and for each picture its
`projector.image_cells` (negative numbers from its content hash), so the pool compares,
reuses, parks and restores it like any prompt. Beside the list, `PromptImages` holds each
picture's chunk by the cell where it starts.

A picture cannot share a llama_batch with token rows (its rows are embeddings), so the engine
evaluates it between two steps, on the model thread: the projector encodes it (the expensive,
CPU-bound part), then its embeddings are decoded into the reply's sequence at its position,
in batches of the step's size. The other replies wait for that: the one stated exception to
the engine's one-chunk stall bound (bench/images.py measures it).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import llama_cpp

from bot.model.llama_cpp.projector import Chunks, Projector, ProjectorError, image_cells
from bot.model.types import DecodedImage


@dataclass(frozen=True, slots=True)
class ImageSlot:
    """One picture of a prompt: the cell where it starts, its cells, and its chunk."""

    start: int
    n_tokens: int
    chunks: Chunks
    index: int  # of its chunk in `chunks`


@dataclass(eq=False, slots=True)
class PromptImages:
    """The pictures of one prompt by the cell where each starts; close() frees their chunks."""

    at: dict[int, ImageSlot] = field(default_factory=dict)
    owned: list[Chunks] = field(default_factory=list)

    def next_start(self, cell: int) -> int | None:
        """Where the first picture at or after `cell` starts (None: no picture left)."""
        return min((s for s in self.at if s >= cell), default=None)

    def close(self) -> None:
        for chunks in self.owned:
            chunks.close()
        self.owned.clear()
        self.at.clear()


Parts = Callable[
    [Sequence[dict[str, str]], Mapping[int, Sequence[DecodedImage]]], list[int | DecodedImage]
]


class Vision:
    """The projector as the engine uses it: prompts with pictures, and their evaluation."""

    def __init__(self, projector: Projector, parts: Parts) -> None:
        self.projector = projector
        self._parts = parts  # ChatText.prompt_parts: the prompt's tokens and its pictures
        self.last_image_s = 0.0  # the last picture's encode and decode, for benchmarks

    def prompt(
        self,
        messages: Sequence[dict[str, str]],
        images: Mapping[int, Sequence[DecodedImage]],
    ) -> tuple[list[int], PromptImages]:
        """The prompt's cells and its pictures. Each picture is tokenized alone, as one part,
        so no media marker is ever looked for in text; a projector that wraps a picture in
        tokens of its own (begin/end of image) gives them as text cells around it."""
        cells: list[int] = []
        found = PromptImages()
        try:
            for part in self._parts(messages, images):
                if isinstance(part, int):
                    cells.append(part)
                    continue
                chunks = self.projector.tokenize([part])
                found.owned.append(chunks)
                for index, chunk in enumerate(chunks.items):
                    if chunk.kind == "text":
                        cells.extend(chunk.tokens)
                        continue
                    if chunk.n_pos != chunk.n_tokens:  # refused at load; a safeguard
                        raise ProjectorError("M-RoPE image positions are not supported")
                    found.at[len(cells)] = ImageSlot(len(cells), chunk.n_tokens, chunks, index)
                    cells.extend(image_cells(chunk.image_id, chunk.n_tokens))
        except Exception:
            found.close()
            raise
        if cells and cells[-1] < 0:
            found.close()
            raise ValueError("a prompt cannot end with a picture")
        return cells, found

    def evaluate(
        self,
        slot: ImageSlot,
        ctx: llama_cpp.llama_context_p,
        memory: llama_cpp.llama_memory_t,
        seq: int,
        position: int,
        n_batch: int,
        make_room: Callable[[], bool],
    ) -> None:
        """Encode the picture, then decode its embeddings into sequence `seq` from `position`
        (no logits: the text after it asks for them). A decode that finds no room in the pool
        is undone and tried again after `make_room` (an idle channel evicted)."""
        m = self.projector.lib
        started = time.perf_counter()
        chunk = m.mtmd_input_chunks_get(slot.chunks.pointer, slot.index)
        if m.mtmd_decode_use_non_causal(self.projector.ctx, chunk) and slot.n_tokens > n_batch:
            raise ProjectorError(
                f"this projector needs a picture's {slot.n_tokens} tokens in one step: set "
                f"[model] n_batch to {slot.n_tokens} or more"
            )
        if m.mtmd_encode_chunk(self.projector.ctx, chunk) != 0:
            raise ProjectorError("the projector could not encode the picture")
        embeddings = m.mtmd_get_output_embd(self.projector.ctx)
        while True:
            new_n_past = ctypes.c_int32(position)  # an image chunk sets it
            status = m.mtmd_helper_decode_image_chunk(
                self.projector.ctx, ctx, chunk, embeddings, position, seq, n_batch,
                ctypes.byref(new_n_past), m.mtmd_helper_post_decode_callback(0), None,
            )  # fmt: skip
            if status == 0:
                break
            # Part of it may be in the KV: it goes, and the whole picture is decoded again.
            llama_cpp.llama_memory_seq_rm(memory, seq, position, -1)
            if not make_room():
                raise ProjectorError(f"the picture could not be decoded (status {status})")
        if new_n_past.value != position + slot.n_tokens:
            raise ProjectorError(f"the picture took {new_n_past.value - position} positions")
        self.last_image_s = time.perf_counter() - started

    def close(self) -> None:
        self.projector.close()
