"""The vision projector through real libmtmd (bot/model/llama_cpp/projector.py): the tiny
generated mmproj loads beside the tiny text model, a prompt of text and a picture is cut into
chunks whose token counts are the projector's, and the image is encoded and evaluated into a
sequence of a real context, where it changes what the model predicts next."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from PIL import Image

from bot.images import ImageLimits, decode_image
from bot.model.llama_cpp.loader import LoadedModel, PoolShape
from bot.model.llama_cpp.projector import Projector, ProjectorError, Text
from bot.model.types import DecodedImage
from support.tinymodel import N_EMBD as TEXT_N_EMBD
from support.tinyprojector import (
    IMAGE_SIZE,
    IMAGE_TOKENS,
    require_mtmd,
    write_tiny_projector,
)

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000, max_side=4096)


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> Iterator[LoadedModel]:
    shape = PoolShape(pool_tokens=512, n_seq_max=4, step_tokens=64, n_threads=1)
    model = LoadedModel(tiny_model, shape)
    yield model
    model.close()


@pytest.fixture(scope="module")
def projector(tiny_projector: Path, loaded: LoadedModel) -> Iterator[Projector]:
    projector = Projector(tiny_projector, loaded.model, n_threads=1)
    yield projector
    projector.close()


def picture(color: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> DecodedImage:
    image = Image.new("RGB", size, color)
    image.paste((0, 0, 0), (0, 0, size[0] // 3, size[1]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return decode_image(out.getvalue(), LIMITS, IMAGE_SIZE)


def prompt(image: DecodedImage, question: str = "what is this?") -> list[Text | DecodedImage]:
    return [
        Text("<|im_start|>user\n", special=True),
        image,
        Text(question),
        Text("<|im_end|>\n<|im_start|>assistant\n", special=True),
    ]


def test_the_projector_loads_for_the_text_model(projector: Projector) -> None:
    assert projector.vision
    assert not projector.mrope  # LLaVA: one position per image token


def test_an_image_is_one_chunk_of_the_projectors_tokens(projector: Projector) -> None:
    image = picture((200, 40, 40))
    chunks = projector.tokenize(prompt(image))
    try:
        kinds = [c.kind for c in chunks.items]
        assert kinds == ["text", "image", "text"]
        text_before, image_chunk, text_after = chunks.items
        # (image_size / patch_size)²: the picture is padded square and resized to 32 × 32.
        assert image_chunk.n_tokens == image_chunk.n_pos == IMAGE_TOKENS
        assert image_chunk.image_id == image.digest
        # The template's markers are control tokens (im_start is id 3, im_end 4).
        assert text_before.tokens[0] == 3
        assert 4 in text_after.tokens and text_after.tokens[-1] != 3
        lib = projector.lib
        assert chunks.n_tokens == lib.mtmd_helper_get_n_tokens(chunks.pointer)
        assert chunks.n_pos == lib.mtmd_helper_get_n_pos(chunks.pointer)
        assert chunks.n_tokens == IMAGE_TOKENS + len(text_before.tokens) + len(text_after.tokens)
    finally:
        chunks.close()


def test_a_typed_media_marker_makes_no_image(projector: Projector) -> None:
    marker = projector.lib.mtmd_default_marker().decode()
    chunks = projector.tokenize([Text(f"look: {marker} {marker}"), picture((0, 0, 255))])
    try:
        assert [c.kind for c in chunks.items] == ["text", "image"]
    finally:
        chunks.close()


def test_the_image_encodes_to_text_model_embeddings(projector: Projector) -> None:
    chunks = projector.tokenize([picture((10, 200, 10))])
    try:
        lib = projector.lib
        chunk = lib.mtmd_input_chunks_get(chunks.pointer, 0)
        assert lib.mtmd_encode_chunk(projector.ctx, chunk) == 0
        embd = lib.mtmd_get_output_embd(projector.ctx)
        values = [embd[i] for i in range(IMAGE_TOKENS * TEXT_N_EMBD)]
        assert all(math.isfinite(v) for v in values)
        assert len(set(values)) > IMAGE_TOKENS  # not a constant: the weights did something
    finally:
        chunks.close()


def logits_after(
    loaded: LoadedModel, projector: Projector, image: DecodedImage, seq: int
) -> list[float]:
    """Evaluate the prompt into ``seq`` from position 0; the next token's logits."""
    llama_cpp.llama_memory_seq_rm(loaded.memory, seq, -1, -1)
    chunks = projector.tokenize(prompt(image))
    try:
        n_past = chunks.evaluate(loaded.ctx, seq, 0, loaded.shape.step_tokens)
        assert n_past == chunks.n_pos
        assert llama_cpp.llama_memory_seq_pos_max(loaded.memory, seq) == n_past - 1
    finally:
        chunks.close()
    row = llama_cpp.llama_get_logits_ith(loaded.ctx.ctx, -1)
    n_vocab = llama_cpp.llama_vocab_n_tokens(loaded.vocab)
    return [row[i] for i in range(n_vocab)]


def test_the_image_is_evaluated_into_a_sequence_and_is_seen(
    loaded: LoadedModel, projector: Projector
) -> None:
    red, blue = picture((220, 30, 30)), picture((30, 30, 220))
    first = logits_after(loaded, projector, red, seq=0)
    again = logits_after(loaded, projector, red, seq=1)
    other = logits_after(loaded, projector, blue, seq=2)
    assert all(math.isfinite(x) for x in first)
    assert max(abs(a - b) for a, b in zip(first, again, strict=True)) < 1e-3
    # Another picture, same words: the prediction moves, so the embeddings reached the model.
    assert max(abs(a - b) for a, b in zip(first, other, strict=True)) > 1e-3


def test_one_chunk_at_a_time_lands_where_all_at_once_does(
    loaded: LoadedModel, projector: Projector
) -> None:
    """The engine's way: text rows in its own batch, the image chunk by a decode of its own."""
    image = picture((120, 120, 0))
    whole = logits_after(loaded, projector, image, seq=0)
    llama_cpp.llama_memory_seq_rm(loaded.memory, 3, -1, -1)
    chunks = projector.tokenize(prompt(image))
    try:
        n_past = 0
        for index in range(len(chunks.items)):
            n_past = chunks.evaluate(loaded.ctx, 3, n_past, loaded.shape.step_tokens, index)
        assert n_past == chunks.n_pos
    finally:
        chunks.close()
    row = llama_cpp.llama_get_logits_ith(loaded.ctx.ctx, -1)
    piecewise = [row[i] for i in range(len(whole))]
    assert max(abs(a - b) for a, b in zip(whole, piecewise, strict=True)) < 1e-3


def test_a_file_that_is_no_projector_is_refused(
    tmp_path: Path, loaded: LoadedModel, tiny_model: Path
) -> None:
    require_mtmd()
    bogus = tmp_path / "not-mmproj.gguf"
    bogus.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ProjectorError, match="could not load this projector"):
        Projector(bogus, loaded.model, n_threads=1)
    # The text model is no projector either (no clip.* keys).
    with pytest.raises(ProjectorError, match="could not load this projector"):
        Projector(tiny_model, loaded.model, n_threads=1)
    # A projector for a model 48 wide, not 64.
    other = write_tiny_projector(tmp_path / "other-mmproj.gguf", out_width=48)
    with pytest.raises(ProjectorError, match="could not load this projector"):
        Projector(other, loaded.model, n_threads=1)


def test_without_libmtmd_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_mtmd(name: str, globals=None, locals=None, fromlist=(), level=0):  # type: ignore[no-untyped-def]
        if name.startswith("llama_cpp") and "mtmd_cpp" in (*name.split("."), *(fromlist or ())):
            raise FileNotFoundError("Shared library with base name 'mtmd' not found")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_mtmd)
    from bot.model.llama_cpp.projector import mtmd

    with pytest.raises(ProjectorError, match=r"built without libmtmd.*make"):
        mtmd()
