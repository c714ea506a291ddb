"""What an OpenAI-compatible server sends, read without a server: events, chunks, refusals
(pure, table-driven)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.model.openai.errors import ServerError, error_message, refusal
from bot.model.openai.sse import Chunk, read_chunk, sse_data

URL = "http://h:8080"


async def lines(*raw: bytes) -> AsyncIterator[bytes]:
    for line in raw:
        yield line


@pytest.mark.parametrize(
    ("raw", "events"),
    [
        ((b"data: a\n", b"\n", b"data: b\n", b"\n"), ["a", "b"]),
        ((b"data: a\r\n", b"\r\n"), ["a"]),  # CRLF line ends
        ((b": ping\n", b"\n", b"data: a\n", b"\n"), ["a"]),  # keep-alive comments
        ((b"data: one\n", b"data: two\n", b"\n"), ["one\ntwo"]),  # one event, two lines
        ((b"data:tight\n", b"\n"), ["tight"]),  # the space after the colon is optional
        ((b"event: x\n", b"id: 1\n", b"data: a\n", b"\n"), ["a"]),  # other fields
        ((b"data: unterminated\n",), ["unterminated"]),  # the stream ends mid-event
        ((b"\n", b"\n"), []),
    ],
)
async def test_sse_data(raw: tuple[bytes, ...], events: list[str]) -> None:
    assert [data async for data in sse_data(lines(*raw))] == events


@pytest.mark.parametrize(
    ("data", "chunk"),
    [
        ("[DONE]", None),
        ('{"choices": [{"text": "Hi"}]}', Chunk(("Hi",))),
        ('{"choices": [{"text": ""}]}', Chunk()),
        ('{"choices": [{"text": null, "finish_reason": null}]}', Chunk()),
        ('{"choices": [{"text": "x", "finish_reason": "length"}]}', Chunk(("x",), "length")),
        ('{"choices": [{"text": "", "finish_reason": "stop"}]}', Chunk((), "stop")),
        ('{"choices": [{"text": "", "finish_reason": "eos"}]}', Chunk((), "stop")),
        (
            '{"choices": [], "usage": {"completion_tokens": 9}}',
            Chunk((), None, {"completion_tokens": 9}),
        ),
        ('{"choices": [], "usage": null}', Chunk()),
        ("{}", Chunk()),
        # /v1/chat/completions: the text is the delta's content.
        ('{"choices": [{"delta": {"role": "assistant"}}]}', Chunk()),
        ('{"choices": [{"delta": {"content": "Hi"}}]}', Chunk(("Hi",))),
        ('{"choices": [{"delta": {"content": null}}]}', Chunk()),
        ('{"choices": [{"delta": {"reasoning_content": "hm"}}]}', Chunk()),
        ('{"choices": [{"delta": {}, "finish_reason": "length"}]}', Chunk((), "length")),
        ('{"choices": [{"delta": null, "finish_reason": "stop"}]}', Chunk((), "stop")),
    ],
)
def test_read_chunk(data: str, chunk: Chunk | None) -> None:
    assert read_chunk(data, URL) == chunk


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            '{"error": {"message": "model exploded"}}',
            f"the model server at {URL} failed: model exploded",
        ),
        ("<html>", f"the model server at {URL} sent something that is not JSON: '<html>'"),
        ("[1, 2]", f"the model server at {URL} sent unexpected JSON: '[1, 2]'"),
    ],
)
def test_read_chunk_errors(data: str, error: str) -> None:
    with pytest.raises(ServerError) as raised:
        read_chunk(data, URL)
    assert str(raised.value) == error


# Issue 12 item 5: a chunk of an unexpected shape is the server's error, never a crash (an
# AttributeError used to end the stream task and leave the cut answer looking complete).
@pytest.mark.parametrize(
    "data",
    [
        '{"choices":["oops"]}',
        '{"choices": {"text": "x"}}',
        '{"choices": "x"}',
        '{"choices": [{"text": 5}]}',
        '{"choices": [{"text": ["a"]}]}',
        '{"choices": [{"text": "a", "finish_reason": 1}]}',
        '{"choices": [], "usage": 3}',
        '{"choices": [{"delta": "Hi"}]}',
        '{"choices": [{"delta": ["Hi"]}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [{"delta": {"content": [{"type": "text"}]}}]}',
    ],
)
def test_read_chunk_rejects_unexpected_shapes(data: str) -> None:
    with pytest.raises(ServerError) as raised:
        read_chunk(data, URL)
    assert str(raised.value) == f"the model server at {URL} sent unexpected JSON: {data!r}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "bad key", "type": "auth"}}, "bad key"),
        ({"error": {"detail": "nope"}}, "nope"),
        ({"error": "plain text"}, "plain text"),
        ({"detail": "Not Found"}, "Not Found"),
        ("just a string", "just a string"),
    ],
)
def test_error_message(body: object, message: str) -> None:
    assert error_message(body) == message


WHERE = f"the model server at {URL}"


@pytest.mark.parametrize(
    ("status", "body", "reason", "text"),
    [
        (
            401,
            '{"error": {"message": "Invalid API key"}}',
            "Unauthorized",
            f"{WHERE} refused the API key (HTTP 401: Invalid API key)",
        ),
        (403, "", "Forbidden", f"{WHERE} refused the API key (HTTP 403: Forbidden)"),
        (404, "", "Not Found", f"{WHERE} has no {URL}/v1/completions (HTTP 404): check base_url"),
        (500, "  oops \n", "Internal Server Error", f"{WHERE} answered HTTP 500: oops"),
        (503, "x" * 1000, None, f"{WHERE} answered HTTP 503: {'x' * 300}"),
    ],
)
def test_refusal(status: int, body: str, reason: str | None, text: str) -> None:
    assert refusal(status, body, reason, URL, f"{URL}/v1/completions") == text
