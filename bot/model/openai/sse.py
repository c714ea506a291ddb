"""Reading what an OpenAI-compatible server sends: the server-sent events of a
`/v1/completions` or `/v1/chat/completions` stream, what each one says (text, why the reply
ended, token counts), and JSON bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from bot.model.openai.errors import ServerError, error_message, server_at
from bot.model.types import FinishReason

DONE = "[DONE]"


async def sse_data(lines: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The `data` of each server-sent event; comments (keep-alive pings) are skipped."""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one event of a completion stream says."""

    texts: tuple[str, ...] = ()  # the non-empty text pieces, in order
    finish: FinishReason | None = None  # set once the server says why the reply ended
    usage: dict[str, Any] | None = None  # token counts, in the last event when asked for


def read_chunk(data: str, base_url: str) -> Chunk | None:
    """The event's content; None for the end marker. Raises ServerError for an error event
    or for anything not shaped like a completion or chat completion chunk."""
    if data == DONE:
        return None
    event = json_object(data, base_url)
    if error := event.get("error"):
        raise ServerError(f"{server_at(base_url)} failed: {error_message(error)}")
    choices = event.get("choices") or []
    usage = event.get("usage") or None
    if not isinstance(choices, list) or not isinstance(usage, dict | None):
        raise unexpected(data, base_url)
    texts: list[str] = []
    finish: FinishReason | None = None
    for choice in choices:
        # A completion's `text`, or a chat chunk's `delta.content` (its first chunk names only
        # the role; a reasoning server's `reasoning_content` is not the answer).
        delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise unexpected(data, base_url)
        text, reason = choice.get("text", delta.get("content")), choice.get("finish_reason")
        if not isinstance(text, str | None) or not isinstance(reason, str | None):
            raise unexpected(data, base_url)
        if text:
            texts.append(text)
        if reason:
            finish = "length" if reason == "length" else "stop"
    return Chunk(tuple(texts), finish, usage)


def json_object(data: str, base_url: str) -> dict[str, Any]:
    """The JSON object the server sent. Raises ServerError for anything else."""
    try:
        value = json.loads(data)
    except ValueError:
        raise ServerError(
            f"{server_at(base_url)} sent something that is not JSON: {data[:80]!r}"
        ) from None
    if not isinstance(value, dict):
        raise unexpected(data, base_url)
    return value


def unexpected(data: str, base_url: str) -> ServerError:
    """The server sent JSON of a shape we do not know."""
    return ServerError(f"{server_at(base_url)} sent unexpected JSON: {data[:80]!r}")
