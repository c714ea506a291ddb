"""The vision projector: libmtmd (llama.cpp's multimodal library) reads an mmproj GGUF beside
the text model, cuts a prompt of text and pictures into chunks, and evaluates them into one
sequence of the pool's context. The engine uses it through bot.model.llama_cpp.vision.

`llama_cpp.mtmd_cpp` loads libmtmd when it is imported and raises when llama-cpp-python was
built without it (-DLLAVA_BUILD=OFF), so it is imported here only when a projector is opened.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from llama_cpp._internals import LlamaContext, LlamaModel

from bot.model.gguf import read_metadata
from bot.model.llama_cpp.loader import muted_log, route_mtmd_log
from bot.model.types import DecodedImage


class ProjectorError(Exception):
    """No libmtmd in this build, or a projector file it refuses, or a failed evaluation."""


def mtmd() -> ModuleType:
    """llama_cpp.mtmd_cpp, or ProjectorError saying that this build has no libmtmd."""
    try:
        from llama_cpp import mtmd_cpp
    except (OSError, RuntimeError) as e:  # FileNotFoundError: the library is not there
        raise ProjectorError(
            f"this llama-cpp-python was built without libmtmd ({e}); reinstall it with "
            "`make` (docker/cmake_args.sh builds it)"
        ) from e
    return mtmd_cpp


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of prompt text. `special`: its control tokens (a template's markers) are
    parsed; a user's words never are, so a typed media marker stays plain text."""

    text: str
    special: bool = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a tokenized prompt: text tokens, or an image's embedding slots."""

    kind: Literal["text", "image"]
    n_tokens: int  # KV cells it takes
    n_pos: int  # positions it advances (differs from n_tokens under M-RoPE)
    tokens: tuple[int, ...] = ()  # a text chunk's tokens
    image_id: str = ""  # an image chunk's bitmap id (the picture's content hash)


def image_cells(image_id: str, n_tokens: int) -> list[int]:
    """An image chunk's KV cells as entries of a sequence's token list (what the pool compares
    to reuse a prefix, kv_cache.common_prefix): negative numbers from the picture's content
    hash (hex), odd for its first cell, even for the rest. Token ids are never negative, so the
    same picture matches and any other text or picture differs at its first cell."""
    key = int(image_id[:15], 16) + 1
    return [-(2 * key + 1)] + [-(2 * key)] * (n_tokens - 1)


def whole_images(cells: Sequence[int], prefix: int) -> int:
    """``prefix`` (cells of ``cells`` already in the KV cache), cut back to the start of an
    image it ends inside: an image chunk is evaluated whole, never from its middle."""
    if not 0 < prefix < len(cells) or not _continues_image(cells[prefix]):
        return prefix
    start = prefix
    while _continues_image(cells[start]):  # an image's first cell is odd: the walk ends there
        start -= 1
    return start


def _continues_image(cell: int) -> bool:
    return cell < 0 and cell % 2 == 0


class Chunks:
    """A tokenized prompt (mtmd_input_chunks), owned: close() frees it."""

    def __init__(self, projector: Projector, pointer: Any) -> None:
        m = projector.lib
        self.projector = projector
        self.pointer = pointer
        self.items: list[Chunk] = []
        for i in range(m.mtmd_input_chunks_size(pointer)):
            chunk = m.mtmd_input_chunks_get(pointer, i)
            n_tokens = m.mtmd_input_chunk_get_n_tokens(chunk)
            n_pos = m.mtmd_input_chunk_get_n_pos(chunk)
            if m.mtmd_input_chunk_get_type(chunk) == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t(0)
                tokens = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                text = tuple(tokens[j] for j in range(count.value))
                self.items.append(Chunk("text", n_tokens, n_pos, tokens=text))
            else:
                image_id = (m.mtmd_input_chunk_get_id(chunk) or b"").decode()
                self.items.append(Chunk("image", n_tokens, n_pos, image_id=image_id))

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.items)

    @property
    def n_pos(self) -> int:
        return sum(c.n_pos for c in self.items)

    def evaluate(
        self, ctx: LlamaContext, seq: int, n_past: int, n_batch: int, index: int | None = None
    ) -> int:
        """Evaluate every chunk (or the one at ``index``) into sequence ``seq`` from position
        ``n_past``, asking logits for the last token; returns the next position. An image
        chunk is encoded by the projector, then its embeddings are decoded on their own."""
        m = self.projector.lib
        # Starts at n_past: for a text chunk, mtmd_helper_eval_chunk_single adds the tokens it
        # decoded to it rather than setting it (an image chunk sets it).
        new_n_past = ctypes.c_int32(n_past)
        if index is None:
            status = m.mtmd_helper_eval_chunks(
                self.projector.ctx, ctx.ctx, self.pointer, n_past, seq, n_batch, True,
                ctypes.byref(new_n_past),
            )  # fmt: skip
        else:
            chunk = m.mtmd_input_chunks_get(self.pointer, index)
            status = m.mtmd_helper_eval_chunk_single(
                self.projector.ctx, ctx.ctx, chunk, n_past, seq, n_batch, True,
                ctypes.byref(new_n_past),
            )  # fmt: skip
        if status != 0:
            raise ProjectorError(f"libmtmd could not evaluate the prompt (status {status})")
        return int(new_n_past.value)

    def close(self) -> None:
        if self.pointer is not None:
            self.projector.lib.mtmd_input_chunks_free(self.pointer)
            self.pointer = None


class Projector:
    """An mmproj file opened for the loaded text model (mtmd_context); close() frees it."""

    def __init__(
        self, path: Path, model: LlamaModel, n_threads: int, use_gpu: bool = False
    ) -> None:
        self.lib = m = mtmd()
        params = m.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        # mtmd encodes a warm-up image at load, so the first real one pays no graph setup.
        params.warmup = True
        with muted_log() as lines:  # its load narrates on stderr; an error is kept for ours
            route_mtmd_log(m, capture=True)
            try:
                self.ctx = m.mtmd_init_from_file(str(path).encode(), model.model, params)
                said = [
                    line.split(" error: ", 1)[1].strip() for line in lines if " error: " in line
                ]
            finally:
                route_mtmd_log(m, capture=False)
        if not self.ctx:
            reason = f" ({said[0]})" if said else ""
            raise ProjectorError(
                f"{path}: libmtmd could not load this projector for the model{reason}: a "
                "missing file, not an mmproj GGUF, or one made for another model"
            )
        self.vision = bool(m.mtmd_support_vision(self.ctx))
        # Position layout of image chunks (Qwen2-VL and later): n_pos differs from n_tokens.
        self.mrope = bool(m.mtmd_decode_use_mrope(self.ctx))
        # The side a picture is resized to (LLaVA pads it square first), from the file.
        size = read_metadata(path).get("clip.vision.image_size")
        self.image_size = size if isinstance(size, int) else 0
        self.image_tokens = self._probe_tokens() if self.vision else 0

    def _probe_tokens(self) -> int:
        """KV cells of one picture of the projector's own size (every picture's, for LLaVA)."""
        side = self.image_size or 32
        blank = DecodedImage(side, side, bytes(side * side * 3), "probe", "0" * 64)
        chunks = self.tokenize([blank])
        try:
            return sum(c.n_tokens for c in chunks.items if c.kind == "image")
        finally:
            chunks.close()

    def tokenize(self, parts: Sequence[Text | DecodedImage]) -> Chunks:
        """Cut text pieces and pictures into chunks, in order. No media marker is searched
        for: each picture is one part (mtmd_tokenize_from_parts)."""
        m = self.lib
        keep: list[Any] = []  # ctypes objects that must outlive the call
        bitmaps: list[Any] = []
        pointers = (ctypes.POINTER(m.mtmd_input_part) * len(parts))()
        try:
            for i, part in enumerate(parts):
                if isinstance(part, Text):
                    data = part.text.encode()
                    text = m.mtmd_input_text(data, len(data), False, part.special)
                    keep.append(text)
                    entry = m.mtmd_input_part(ctypes.pointer(text), None)
                else:
                    bitmaps.append(self._bitmap(part))
                    entry = m.mtmd_input_part(None, bitmaps[-1])
                keep.append(entry)
                pointers[i] = ctypes.pointer(entry)
            output = m.mtmd_input_chunks_init()
            status = m.mtmd_tokenize_from_parts(self.ctx, output, pointers, len(parts), False)
            if status != 0:
                m.mtmd_input_chunks_free(output)
                raise ProjectorError(f"libmtmd could not tokenize the prompt (status {status})")
            return Chunks(self, output)
        finally:
            for bitmap in bitmaps:  # the chunks hold their own preprocessed copy
                m.mtmd_bitmap_free(bitmap)

    def _bitmap(self, image: DecodedImage) -> Any:
        m = self.lib
        if len(image.rgb) != image.width * image.height * 3:
            raise ValueError(
                f"{image.width}x{image.height} RGB needs {image.width * image.height * 3} bytes"
            )
        data = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmap = m.mtmd_bitmap_init(image.width, image.height, data)
        if not bitmap:
            raise ProjectorError(f"libmtmd refused a {image.width}x{image.height} bitmap")
        m.mtmd_bitmap_set_id(bitmap, image.digest.encode())
        return bitmap

    def close(self) -> None:
        if self.ctx:
            self.lib.mtmd_free(self.ctx)
            self.ctx = None
