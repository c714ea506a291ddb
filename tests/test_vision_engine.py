"""Pictures through the in-process backend (bot/model/llama_cpp/vision.py): the real tiny model
with the real tiny projector through libmtmd. A turn with a picture gets a reply that depends
on the picture, counts its tokens exactly, warms the channel's KV past the picture for the
next turn, and does not stop other channels' replies; a typed media marker makes no picture;
a model without a projector refuses pictures; a bad `[model] mmproj` is a clear config error."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.images import ImageLimits, decode_image
from bot.model.backend import load_backend
from bot.model.gguf import ModelFileError
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import DecodedImage, Generation, GenerationRequest
from bot.personas import Sampling
from bot.settings import ModelSettings
from support.llama_server import free_port
from support.tinyprojector import (
    IMAGE_SIZE,
    IMAGE_TOKENS,
    write_tiny_projector,
)

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000, max_side=4096)


@pytest.fixture
async def seeing(tiny_model: Path, tiny_projector: Path) -> AsyncIterator[LlamaCppBackend]:
    backend = await LlamaCppBackend.load(
        tiny_model, n_ctx=1024, n_threads=1, kv_cache_mb=64, mmproj=tiny_projector
    )
    yield backend
    await backend.close()


def picture(color: tuple[int, int, int]) -> DecodedImage:
    image = Image.new("RGB", (90, 60), color)
    image.paste((255, 255, 255), (0, 0, 30, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    return decode_image(out.getvalue(), LIMITS, IMAGE_SIZE)


RED, BLUE = picture((220, 30, 30)), picture((30, 30, 220))


def chat(question: str = "what is in this picture?") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You describe pictures."},
        {"role": "user", "content": question},
    ]


def request(
    messages: list[dict[str, str]],
    images: dict[int, list[DecodedImage]],
    key: str | None = None,
    cold: bool = False,
    max_tokens: int = 16,
    temperature: float = 1.0,
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages,
        sampling=Sampling(max_tokens=max_tokens, temperature=temperature, top_k=0, min_p=0.0),
        seed=7,
        cache_key=key,
        cold=cold,
        ban_eos=True,
        images=images,
    )


async def reply(backend: LlamaCppBackend, req: GenerationRequest) -> Generation:
    generation = backend.start(req)
    _ = [d async for d in generation]
    return generation


def cells_before_picture(backend: LlamaCppBackend, messages: list[dict[str, str]]) -> int:
    """Where the picture of message 1 starts among the prompt's cells."""
    parts = backend._text.prompt_parts(messages, {1: [RED]})
    return parts.index(RED)


async def test_the_model_sees_with_its_projector(seeing: LlamaCppBackend) -> None:
    info = seeing.info
    assert info.sees_images
    assert info.image_tokens == IMAGE_TOKENS
    assert info.image_side_px == IMAGE_SIZE


async def test_an_image_turn_gets_a_reply_counting_the_picture(seeing: LlamaCppBackend) -> None:
    messages = chat()
    generation = await reply(seeing, request(messages, {1: [RED]}))
    result = generation.result
    assert result.error is None and result.finish == "length"
    assert result.generated_tokens == 16 and result.text
    parts = seeing._text.prompt_parts(messages, {1: [RED]})
    text_tokens = [p for p in parts if isinstance(p, int)]
    assert result.prompt_tokens == len(text_tokens) + IMAGE_TOKENS


async def test_the_reply_depends_on_the_picture(seeing: LlamaCppBackend) -> None:
    """Fixed seed (evaluated alone, from scratch): the same picture gives the same text, another
    picture with the same words another text."""
    messages = chat()
    first = await reply(seeing, request(messages, {1: [RED]}, cold=True, max_tokens=24))
    again = await reply(seeing, request(messages, {1: [RED]}, cold=True, max_tokens=24))
    other = await reply(seeing, request(messages, {1: [BLUE]}, cold=True, max_tokens=24))
    assert first.result.text == again.result.text
    assert first.result.text != other.result.text


async def test_the_next_turn_reuses_the_picture(seeing: LlamaCppBackend) -> None:
    messages = chat()
    first = await reply(seeing, request(messages, {1: [RED]}, key="a"))
    follow_up = [
        *messages,
        {"role": "assistant", "content": first.result.text},
        {"role": "user", "content": "and the colour?"},
    ]
    picture_end = cells_before_picture(seeing, messages) + IMAGE_TOKENS
    second = await reply(seeing, request(follow_up, {1: [RED]}, key="a"))
    assert second.result.error is None
    assert second.result.reused_tokens > picture_end
    assert second.result.reused_tokens >= first.result.prompt_tokens - 1
    # Another picture in its place: reuse stops where the pictures differ.
    third = await reply(seeing, request(follow_up, {1: [BLUE]}, key="a"))
    assert third.result.error is None
    assert 0 < third.result.reused_tokens <= picture_end - IMAGE_TOKENS


async def test_a_parked_channel_comes_back_with_its_picture(seeing: LlamaCppBackend) -> None:
    """Channel a's sequence (picture included) is parked as a snapshot while b generates, and
    restored for a's next turn."""
    long_question = "tell me about the picture, " * 12
    messages = chat(long_question)
    first = await reply(seeing, request(messages, {1: [RED]}, key="a"))
    await reply(seeing, request(chat("something else entirely " * 6), {}, key="b"))
    assert "a" in seeing._cache  # parked
    follow_up = [
        *messages,
        {"role": "assistant", "content": first.result.text},
        {"role": "user", "content": "more"},
    ]
    second = await reply(seeing, request(follow_up, {1: [RED]}, key="a"))
    assert second.result.reused_tokens > cells_before_picture(seeing, messages) + IMAGE_TOKENS


async def test_an_image_arriving_while_another_channel_generates(seeing: LlamaCppBackend) -> None:
    """b streams a fixed-seed reply (its own lane: the same text whatever runs beside it); a
    picture for channel a arrives in the middle. b goes on and ends as it does alone; a, alone
    in the shared lane either way, gives the text it gives alone."""
    b_request = request(chat("count to fifty"), {}, key="b", cold=True, max_tokens=48)
    a_request = request(chat(), {1: [RED]}, key="a", max_tokens=12, temperature=0.0)
    b_alone = (await reply(seeing, b_request)).result.text
    a_alone = (await reply(seeing, a_request)).result.text
    await seeing.forget(None)

    b = seeing.start(b_request)
    b_times: list[float] = []
    a_times: list[float] = []
    a: Generation | None = None
    drained: asyncio.Task[None] | None = None

    async def drain(generation: Generation) -> None:
        async for _ in generation:
            a_times.append(time.perf_counter())

    async for _ in b:
        b_times.append(time.perf_counter())
        if len(b_times) == 4:
            a = seeing.start(a_request)
            drained = asyncio.create_task(drain(a))
    assert a is not None and drained is not None
    await drained
    a_started = b_times[3]
    assert b.result.error is None and b.result.text == b_alone
    assert b.result.generated_tokens == 48
    assert a.result.error is None and a.result.text == a_alone
    # b kept streaming after a's picture arrived, not held until a ended. (Counting b's pieces
    # was flaky: a slow event loop joins several tokens into one piece.)
    assert any(a_started < t < a_times[-1] for t in b_times)


async def test_a_typed_media_marker_makes_no_picture(seeing: LlamaCppBackend) -> None:
    marker = "<__media__>"
    messages = [*chat(), {"role": "assistant", "content": "a red thing"}]
    messages.append({"role": "user", "content": f"{marker} and {marker} here"})
    vision = seeing._engine.pictures.vision  # type: ignore[union-attr]
    assert vision is not None
    cells, images = vision.prompt(messages, {1: [RED]})
    try:
        assert list(images.at) == [cells_before_picture(seeing, messages)]
        assert sum(c < 0 for c in cells) == IMAGE_TOKENS
        # The marker's text is tokenized as text, exactly as without any picture.
        assert cells[-40:] == seeing.prompt_tokens(messages)[-40:]
    finally:
        images.close()
    result = (await reply(seeing, request(messages, {1: [RED]}))).result
    assert result.error is None and result.prompt_tokens == len(cells)


async def test_a_model_without_projector_refuses_pictures(tiny_model: Path) -> None:
    backend = await LlamaCppBackend.load(tiny_model, n_ctx=1024, n_threads=1)
    try:
        assert not backend.info.sees_images and backend.info.image_tokens == 0
        result = (await reply(backend, request(chat(), {1: [RED]}))).result
        assert result.finish == "error"
        assert result.error is not None and "cannot see images" in result.error
        assert (await reply(backend, request(chat(), {}))).result.error is None
    finally:
        await backend.close()


@pytest.mark.parametrize("problem", ["missing", "not_a_projector", "other_model"])
async def test_a_bad_mmproj_names_the_setting(
    tmp_path: Path, tiny_model: Path, tiny_projector: Path, problem: str
) -> None:
    mmproj = {
        "missing": tmp_path / "nope.gguf",
        "not_a_projector": tiny_model,
        "other_model": write_tiny_projector(tmp_path / "wide.gguf", out_width=48),
    }[problem]
    settings = ModelSettings(path=tiny_model, mmproj=mmproj, n_ctx=1024, n_threads=1)
    with pytest.raises(ModelFileError, match=r"^\[model\] mmproj: ") as caught:
        await load_backend(settings, tiny_model)
    if problem == "other_model":
        assert "n_embd = 64" in str(caught.value) and "n_embd = 48" in str(caught.value)


def test_check_reports_a_bad_mmproj_without_a_traceback(
    tmp_path: Path, tiny_model: Path, tiny_projector: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")} | {
        "HOME": str(tmp_path),
        "HEARTHBOT_MODEL__PATH": str(tiny_model),
        "HEARTHBOT_MODEL__MMPROJ": str(tmp_path / "nope.gguf"),
        "HEARTHBOT_MODEL__N_CTX": "1024",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "data"),
        "HEARTHBOT_HEALTH__LISTEN": f"127.0.0.1:{free_port()}",
        "HEARTHBOT_DISCORD__TOKEN": "discord-token-0123456789abcdef",
    }
    run = [sys.executable, "-m", "bot.app.cli", "check"]
    result = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert any(line.startswith("✗ model: [model] mmproj: ") for line in result.stdout.splitlines())
    env["HEARTHBOT_MODEL__MMPROJ"] = str(tiny_projector)
    result = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"✓ images: {tiny_projector} — a picture takes {IMAGE_TOKENS} tokens" in result.stdout


async def test_a_picture_that_finds_the_pool_full_makes_room(
    tiny_model: Path, tiny_projector: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """No snapshot memory, so an idle channel stays resident and fills the pool; the picture's
    decode finds no room, an idle channel is evicted, and the picture is decoded again."""
    backend = await LlamaCppBackend.load(
        tiny_model, n_ctx=256, n_threads=1, parallel=1, kv_cache_mb=0, mmproj=tiny_projector
    )
    try:
        filler = [{"role": "user", "content": "word " * 400}]
        filled = backend.prompt_tokens(filler)
        filler[0]["content"] = "word " * (400 - (len(filled) - 242))
        generation = await reply(backend, request(filler, {}, key="x", max_tokens=1))
        assert generation.result.error is None and generation.result.prompt_tokens == 242
        assert backend.cache_state("x") == "warm (242 tokens resident)"
        # The picture starts the system message: the text before it still fits beside x.
        before = backend._text.prompt_parts(chat(), {0: [RED]}).index(RED)
        assert before <= 256 - 242 < before + IMAGE_TOKENS  # but the picture does not
        evicted_by: list[str] = []
        evict = backend._pool.evict

        def noted_evict() -> bool:
            evicted_by.append(traceback.extract_stack()[-2].name)
            return evict()

        backend._pool.evict = noted_evict  # type: ignore[method-assign]
        seen = await reply(backend, request(chat(), {0: [RED]}, key="a", max_tokens=4))
        assert seen.result.error is None and seen.result.generated_tokens == 4
        assert evicted_by == ["evaluate"]  # the picture's decode made room
        assert backend.cache_state("x") == "cold"
    finally:
        await backend.close()
    assert "failed" not in capfd.readouterr().err  # making room is not an error


async def test_one_picture_per_step(seeing: LlamaCppBackend) -> None:
    """Two replies with pictures arriving together: their pictures are evaluated before two
    different steps, so the replies beside them wait for one picture at most."""
    engine = seeing._engine
    assert engine is not None and engine.pictures.vision is not None
    vision = engine.pictures.vision
    steps_at: list[int] = []
    evaluate = vision.evaluate

    def noted(*args: object, **kwargs: object) -> None:
        steps_at.append(engine.steps)
        evaluate(*args, **kwargs)  # type: ignore[arg-type]

    vision.evaluate = noted  # type: ignore[method-assign]
    a = seeing.start(request(chat("first"), {1: [RED]}, key="a", max_tokens=4))
    b = seeing.start(request(chat("second"), {1: [BLUE]}, key="b", max_tokens=4))
    results = [[d async for d in g] and g.result for g in (a, b)]
    assert all(r.error is None and r.generated_tokens == 4 for r in results)
    assert len(steps_at) == 2 and steps_at[0] != steps_at[1]


async def test_a_cancelled_picture_reply_frees_its_pictures(seeing: LlamaCppBackend) -> None:
    engine = seeing._engine
    assert engine is not None
    generation = seeing.start(request(chat(), {1: [RED]}, key="a", max_tokens=200))
    async for _ in generation:
        generation.cancel()
    assert generation.result.finish == "cancelled"
    waiting = seeing.start(request(chat(), {1: [RED]}, key="b"))
    waiting.cancel()
    _ = [d async for d in waiting]
    assert waiting.result.finish == "cancelled"
    assert not engine.pictures._waiting
    after = await reply(seeing, request(chat(), {1: [RED]}, key="a"))
    assert after.result.error is None and after.result.generated_tokens == 16
