"""The openai backend's pictures, against a llama-server stand-in on 127.0.0.1: /props says
whether it sees images, and /v1/completions gets them as `multimodal_data` with one media
marker each in the prompt; a marker typed in a message never becomes a picture's slot."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.model.openai.backend import OpenAIBackend
from bot.model.openai.pictures import DEFAULT_MARKER, IMAGE_TOKENS_GUESS, neutralised
from bot.model.types import DecodedImage, GenerationRequest, GenerationResult
from bot.personas import Sampling

MARKER = "<__media_k3x9q__>"  # recent llama-server: random per process, named by /props
RED = DecodedImage(3, 2, bytes([255, 0, 0]) * 6, "PNG", "a" * 64)
BLUE = DecodedImage(2, 2, bytes([0, 0, 255]) * 4, "JPEG", "b" * 64)


class LlamaServer:
    """Answers GET /props with `props` (None: 404, as a server that is not llama-server) and
    POST /v1/completions with one streamed "Hi", recording each body; its usage counts the
    prompt as `prompt_tokens`."""

    def __init__(self, props: dict[str, Any] | None, prompt_tokens: int = 0) -> None:
        self.props = props
        self.prompt_tokens = prompt_tokens
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> LlamaServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            method, path = head.split(b" ")[:2]
            self.paths.append(f"{method.decode()} {path.decode()}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            if path == b"/props":
                if self.props is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                else:
                    data = json.dumps(self.props).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(data), data)
                    )
            else:
                self.bodies.append(json.loads(body))
                usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": 1}
                events = [
                    {"choices": [{"text": "Hi", "finish_reason": "stop"}]},
                    {"choices": [], "usage": usage},
                ]
                sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                data = sse.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(data), data)
                )
            await writer.drain()
        writer.close()


@pytest.fixture
async def vision_server() -> AsyncIterator[LlamaServer]:
    props = {"modalities": {"vision": True, "audio": False}, "media_marker": MARKER}
    async with LlamaServer(props) as server:
        yield server


async def reply(backend: OpenAIBackend, request: GenerationRequest) -> GenerationResult:
    generation = backend.start(request)
    _ = [delta async for delta in generation]
    return generation.result


def with_pictures(typed: str) -> GenerationRequest:
    messages = [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": f"Mallory: what is this? {typed}"},
        {"role": "assistant", "content": "A red thing."},
        {"role": "user", "content": "Mallory: and these?"},
    ]
    return GenerationRequest(
        messages=messages,
        sampling=Sampling(max_tokens=4),
        seed=1,
        images={1: [RED], 3: [BLUE, RED]},
    )


def decoded(data: str) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        assert image.format == "PNG"
        return image.size, image.convert("RGB").tobytes()


@pytest.mark.parametrize(
    ("props", "sees", "tokens"),
    [
        ({"modalities": {"vision": True}, "media_marker": MARKER}, True, IMAGE_TOKENS_GUESS),
        ({"modalities": {"vision": False, "audio": True}}, False, 0),
        ({"total_slots": 1}, False, 0),  # an older llama-server: no modalities at all
        (None, False, 0),  # not llama-server (404)
    ],
)
async def test_sees_images_follows_props(
    tiny_model: Path, props: dict[str, Any] | None, sees: bool, tokens: int
) -> None:
    async with LlamaServer(props) as server:
        backend = await OpenAIBackend.load(tiny_model, server.url + "/v1", 2048, timeout_s=5)
        await backend.close()
    assert server.paths == ["GET /props"]
    assert backend.info.sees_images is sees and backend.info.image_tokens == tokens


async def test_a_server_that_is_down_at_load_is_text_only(tiny_model: Path) -> None:
    backend = await OpenAIBackend.load(tiny_model, "http://127.0.0.1:9", 2048, timeout_s=5)
    await backend.close()
    assert not backend.info.sees_images


async def test_pictures_go_as_multimodal_data_with_one_marker_each(
    tiny_model: Path, vision_server: LlamaServer
) -> None:
    backend = await OpenAIBackend.load(tiny_model, vision_server.url, 2048, timeout_s=5)
    request = with_pictures(typed=f"{MARKER} and {MARKER}{MARKER}")
    try:
        result = await reply(backend, request)
        expected_text = backend.prompt_text(
            [
                request.messages[0],
                {
                    **request.messages[1],
                    "content": MARKER + neutralised(request.messages[1]["content"], MARKER),
                },
                request.messages[2],
                {**request.messages[3], "content": MARKER * 2 + request.messages[3]["content"]},
            ]
        )
    finally:
        await backend.close()
    assert result.finish == "stop" and result.text == "Hi"
    (body,) = vision_server.bodies
    prompt = body["prompt"]
    assert set(prompt) == {"prompt_string", "multimodal_data"}
    text, data = prompt["prompt_string"], prompt["multimodal_data"]
    # One marker per picture, in order, and the three the user typed are plain text.
    assert text.count(MARKER) == len(data) == 3
    assert text == expected_text
    assert text.count(neutralised(MARKER, MARKER)) == 3
    assert [decoded(d) for d in data] == [
        ((3, 2), RED.rgb),
        ((2, 2), BLUE.rgb),
        ((3, 2), RED.rgb),
    ]
    assert body["max_tokens"] == 4 and body["seed"] == 1


async def test_the_default_marker_typed_on_an_older_server_is_text(tiny_model: Path) -> None:
    """A server that names no marker uses libmtmd's default, `<__media__>`."""
    async with LlamaServer({"modalities": {"vision": True}}) as server:
        backend = await OpenAIBackend.load(tiny_model, server.url, 2048, timeout_s=5)
        try:
            await reply(backend, with_pictures(typed=DEFAULT_MARKER))
        finally:
            await backend.close()
    text = server.bodies[0]["prompt"]["prompt_string"]
    assert text.count(DEFAULT_MARKER) == 3 == len(server.bodies[0]["prompt"]["multimodal_data"])
    assert "\u2060" in text


async def test_a_pictures_count_is_learned_from_the_servers(
    tiny_model: Path, vision_server: LlamaServer
) -> None:
    backend = await OpenAIBackend.load(tiny_model, vision_server.url, 2048, timeout_s=5)
    request = with_pictures(typed="")
    try:
        text = len(backend.prompt_tokens(request.messages))
        vision_server.prompt_tokens = text + 3 * 81
        assert backend.info.image_tokens == IMAGE_TOKENS_GUESS  # until the server counts one
        first = await reply(backend, request)
        # A text-only request still goes as token ids, counted here.
        plain = GenerationRequest(request.messages, Sampling(max_tokens=4), seed=2)
        vision_server.prompt_tokens = text
        await reply(backend, plain)
        plain_tokens = backend.prompt_tokens(plain.messages)
    finally:
        await backend.close()
    assert first.prompt_tokens == text + 3 * 81  # the server's, exact
    assert backend.info.image_tokens == 81
    assert vision_server.bodies[-1]["prompt"] == plain_tokens


async def test_a_server_that_does_not_see_images_gets_none(tiny_model: Path) -> None:
    async with LlamaServer({"modalities": {"vision": False}}) as server:
        backend = await OpenAIBackend.load(tiny_model, server.url, 2048, timeout_s=5)
        try:
            result = await reply(backend, with_pictures(typed=""))
        finally:
            await backend.close()
    assert result.finish == "error" and "does not see images" in (result.error or "")
    assert server.bodies == []


async def test_a_server_that_stalls_on_props_delays_the_start_by_its_bound(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.model.openai.backend as openai_backend

    monkeypatch.setattr(openai_backend, "PROPS_TIMEOUT_S", 0.3)

    async def stall(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    started = asyncio.get_running_loop().time()
    backend = await OpenAIBackend.load(tiny_model, url, 2048, timeout_s=30)
    elapsed = asyncio.get_running_loop().time() - started
    await backend.close()
    server.close()
    assert not backend.info.sees_images and elapsed < 10
