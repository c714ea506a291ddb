"""The openai backend's opt-in chat API (`[model] openai_api = "chat"`): the request's messages
go to /v1/chat/completions with pictures as `image_url` parts, and the reply streams back
through the same code as /v1/completions'. Against a stub on 127.0.0.1 for the body and the
crafted streams, and a real `python -m llama_cpp.server` for a text reply."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.model.backend import load_backend
from bot.model.openai.backend import OpenAIBackend
from bot.model.openai.chat import chat_messages
from bot.model.openai.pictures import IMAGE_TOKENS_GUESS
from bot.model.types import DecodedImage, GenerationRequest, GenerationResult
from bot.personas import Sampling
from bot.settings import load_settings
from support.daemons import answered, ask, daemon_for
from support.llama_server import llama_server
from support.openai_stub import close_stub, never_answer, sse_then_stall, stub
from support.recording_adapter import message

RED = DecodedImage(3, 2, bytes([255, 0, 0]) * 6, "PNG", "a" * 64)
BLUE = DecodedImage(2, 2, bytes([0, 0, 255]) * 4, "JPEG", "b" * 64)
MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Mallory: what is this?"},
    {"role": "assistant", "content": "A red thing."},
    {"role": "user", "content": "Mallory: and these?"},
]
HI = [
    'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n',
    'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n',
    'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
    'data: {"choices": [], "usage": {"prompt_tokens": 1234, "completion_tokens": 1}}\n\n',
    "data: [DONE]\n\n",
]


def with_pictures(**extra: Any) -> GenerationRequest:
    sampling = Sampling(temperature=0.3, top_p=0.8, top_k=20, min_p=0.1, max_tokens=7)
    return GenerationRequest(
        MESSAGES, sampling, seed=99, stop=("\nBob:",), images={1: [RED], 3: [BLUE, RED]}, **extra
    )


async def chat_reply(
    tiny_model: Path, events: list[str], request: GenerationRequest, vision: bool = True
) -> tuple[GenerationResult, list[str], asyncio.Server, str]:
    """What the chat backend makes of a stream of `events`: the result, its deltas, the stub
    (with what it was sent) and its URL."""
    server, url = await stub(sse_then_stall(events))
    backend = await OpenAIBackend.load(
        tiny_model, url, 2048, model="llava", timeout_s=5, api="chat", vision=vision
    )
    try:
        generation = backend.start(request)
        deltas = [delta async for delta in generation]
    finally:
        await backend.close()
        await close_stub(server)
    assert "".join(deltas) == generation.result.text
    return generation.result, deltas, server, url


def picture(part: dict[str, Any]) -> tuple[tuple[int, int], bytes]:
    assert part["type"] == "image_url"
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        assert image.format == "PNG"
        return image.size, image.convert("RGB").tobytes()


def shape(content: object) -> object:
    """A content list as the kinds of its parts, a picture by its size."""
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    return [p["text"] if p["type"] == "text" else picture(p)[0] for p in content]


@pytest.mark.parametrize(
    ("messages", "images", "expected"),
    [
        ([{"role": "user", "content": "hi"}], {}, ["hi"]),
        ([{"role": "user", "content": "hi"}], {0: [RED]}, [[(3, 2), "hi"]]),
        ([{"role": "user", "content": ""}], {0: [RED, BLUE]}, [[(3, 2), (2, 2)]]),
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            {1: [BLUE]},
            ["s", [(2, 2), "u"]],
        ),
    ],
)
def test_chat_messages(
    messages: list[dict[str, str]], images: dict[int, list[DecodedImage]], expected: list[object]
) -> None:
    request = GenerationRequest(messages, Sampling(), seed=1, images=images)
    sent = chat_messages(request, sees_images=True, base_url="http://h")
    assert [m["role"] for m in sent] == [m["role"] for m in messages]
    assert [shape(m["content"]) for m in sent] == expected


async def test_messages_go_with_pictures_before_their_text(tiny_model: Path) -> None:
    result, _deltas, server, _url = await chat_reply(tiny_model, HI, with_pictures())
    assert (result.text, result.finish) == ("Hi", "stop")
    # A generic server has no /props: nothing but the chat request was sent.
    assert server.paths == ["POST /v1/chat/completions"]  # type: ignore[attr-defined]
    (body,) = server.bodies  # type: ignore[attr-defined]
    sent = body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You are a test." and sent[2]["content"] == "A red thing."
    *shown, text = sent[1]["content"]
    assert text == {"type": "text", "text": "Mallory: what is this?"}
    assert [picture(p) for p in shown] == [((3, 2), RED.rgb)]
    *shown, text = sent[3]["content"]
    assert text == {"type": "text", "text": "Mallory: and these?"}
    assert [picture(p) for p in shown] == [((2, 2), BLUE.rgb), ((3, 2), RED.rgb)]
    assert "prompt" not in body
    expected = {
        "model": "llava",
        "max_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "min_p": 0.1,
        "seed": 99,
        "stop": ["\nBob:"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert {k: body[k] for k in expected} == expected
    assert result.prompt_tokens == 1234  # the server's count, where it gives one


async def test_a_streamed_reply_arrives_piece_by_piece(tiny_model: Path) -> None:
    events = [
        ": keep-alive\n\n",
        'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n',
        'data: {"choices": [{"delta": {"content": "Once"}}]}\n\n',
        'data: {"choices": [{"delta": {"content": " upon"}}]}\n\n',
        'data: {"choices": [{"delta": {"content": " a"}, "finish_reason": "length"}]}\n\n',
        'data: {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3,'
        ' "prompt_tokens_details": {"cached_tokens": 30}}}\n\n',
        "data: [DONE]\n\n",
    ]
    request = GenerationRequest(MESSAGES, Sampling(max_tokens=3), seed=1)
    result, _deltas, _server, _url = await chat_reply(tiny_model, events, request)
    assert (result.text, result.finish) == ("Once upon a", "length")
    assert (result.prompt_tokens, result.generated_tokens, result.reused_tokens) == (40, 3, 30)


async def test_without_the_servers_count_the_pictures_are_guessed(tiny_model: Path) -> None:
    events = [
        'data: {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n',
        "data: [DONE]\n\n",
    ]
    backend = await OpenAIBackend.load(tiny_model, "http://127.0.0.1:9", 2048, api="chat")
    text = len(backend.prompt_tokens(MESSAGES))
    await backend.close()
    result, _deltas, _server, _url = await chat_reply(tiny_model, events, with_pictures())
    assert result.prompt_tokens == text + 3 * IMAGE_TOKENS_GUESS


async def test_a_stream_that_ends_without_a_finish_reason_is_an_error(tiny_model: Path) -> None:
    events = ['data: {"choices": [{"delta": {"content": "Half an ans"}}]}\n\n', "data: [DONE]\n\n"]
    result, _deltas, _server, url = await chat_reply(tiny_model, events, with_pictures())
    assert (result.finish, result.text) == ("error", "Half an ans")
    assert result.error == f"the model server at {url} ended the reply without saying why"


async def test_an_error_event_and_a_refusal_end_the_reply_as_errors(tiny_model: Path) -> None:
    failing = ['data: {"error": {"message": "image too large"}}\n\n']
    result, _deltas, _server, url = await chat_reply(tiny_model, failing, with_pictures())
    assert (result.finish, result.error) == (
        "error",
        f"the model server at {url} failed: image too large",
    )

    async def not_found(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    server, url = await stub(not_found)
    backend = await OpenAIBackend.load(tiny_model, url, 2048, timeout_s=5, api="chat")
    try:
        generation = backend.start(GenerationRequest(MESSAGES, Sampling(), seed=1))
        _ = [d async for d in generation]
    finally:
        await backend.close()
        await close_stub(server)
    assert generation.result.finish == "error"
    assert generation.result.error == (
        f"the model server at {url} has no {url}/v1/chat/completions (HTTP 404): check base_url"
    )


async def test_pictures_are_not_sent_unless_the_user_says_it_sees_them(tiny_model: Path) -> None:
    backend = await OpenAIBackend.load(tiny_model, "http://127.0.0.1:9", 2048, api="chat")
    await backend.close()
    assert not backend.info.sees_images and backend.info.image_tokens == 0
    result, _deltas, server, url = await chat_reply(tiny_model, HI, with_pictures(), vision=False)
    assert result.finish == "error"
    assert result.error == (
        f"the model server at {url} is not said to see images ([model] openai_vision = false)"
    )
    assert server.bodies == []  # type: ignore[attr-defined]


async def test_cancel_before_the_first_byte(tiny_model: Path) -> None:
    server, url = await stub(never_answer)
    backend = await OpenAIBackend.load(tiny_model, url, 2048, timeout_s=30, api="chat", vision=True)
    try:
        generation = backend.start(with_pictures())
        await asyncio.sleep(0.1)  # connected and waiting for the answer
        generation.cancel()
        started = time.perf_counter()
        deltas = [d async for d in generation]
        assert time.perf_counter() - started < 0.5
    finally:
        await backend.close()
        await close_stub(server)
    assert (generation.result.finish, deltas, generation.result.error) == ("cancelled", [], None)


@pytest.mark.parametrize(
    ("model", "path", "sees", "approximate"),
    [
        ({}, "/v1/completions", False, False),  # the default: unchanged
        ({"openai_api": "chat"}, "/v1/chat/completions", False, True),
        ({"openai_api": "chat", "openai_vision": True}, "/v1/chat/completions", True, True),
    ],
)
async def test_the_settings_pick_the_api(
    tiny_model: Path, model: dict[str, Any], path: str, sees: bool, approximate: bool
) -> None:
    # A chunk both APIs read: a completion's text, a chat chunk's (empty) delta.
    events = [
        'data: {"choices": [{"text": "Hi", "delta": {}, "finish_reason": "stop"}]}\n\n',
        "data: [DONE]\n\n",
    ]
    server, url = await stub(sse_then_stall(events))
    settings = load_settings(
        None, model={"backend": "openai", "base_url": url, "timeout_s": 5, **model}
    )
    backend = await load_backend(settings.model, tiny_model)
    try:
        generation = backend.start(GenerationRequest(MESSAGES, Sampling(max_tokens=4), seed=1))
        _ = [d async for d in generation]
    finally:
        await backend.close()
        await close_stub(server)
    assert (generation.result.text, generation.result.finish) == ("Hi", "stop")
    assert server.paths[-1] == f"POST {path}"  # type: ignore[attr-defined]
    (body,) = server.bodies  # type: ignore[attr-defined]
    assert ("messages" in body, "prompt" in body) == (approximate, not approximate)
    assert backend.info.sees_images is sees
    assert ("approximate" in backend.info.description) is approximate


# -- a real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tiny_model, tmp_path_factory.mktemp("server")) as url:
        yield url


async def test_a_real_server_answers_through_its_chat_api(tiny_model: Path, server: str) -> None:
    backend = await OpenAIBackend.load(tiny_model, server, 2048, timeout_s=30, api="chat")
    try:
        sampling = Sampling(temperature=0.8, max_tokens=12)
        request = GenerationRequest(MESSAGES[:2], sampling, seed=3, ban_eos=True, cold=True)
        generation = backend.start(request)
        deltas = [d async for d in generation]
        again = backend.start(request)
        _ = [d async for d in again]
        counted = len(backend.prompt_tokens(MESSAGES[:2]))
    finally:
        await backend.close()
    result = generation.result
    assert len(deltas) >= 2 and "".join(deltas) == result.text and result.text.strip()
    assert result.finish == "length"
    assert again.result.text == result.text  # the seed reached the server
    # llama_cpp.server streams no usage: the local count stands.
    assert result.prompt_tokens == counted


async def test_status_says_the_counts_are_approximate(
    tmp_path: Path, tiny_model: Path, server: str
) -> None:
    backend = await OpenAIBackend.load(tiny_model, server, 2048, timeout_s=30, api="chat")
    async with daemon_for(tmp_path, tiny_model, backend=backend) as (daemon, adapter):
        msg = message("hello there")
        await daemon.handle(msg)
        (record,) = adapter.for_message(msg.message_id)
        assert (await answered(record)).strip()
        status = await ask(daemon, adapter, "!status")
    assert f"served by {server}, chat API: token counts approximate" in status
