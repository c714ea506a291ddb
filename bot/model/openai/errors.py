"""What went wrong with the model server, as one line for the log: it cannot be reached, it
is too slow, it refuses us, or it fails while answering."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import aiohttp

from bot.masking import mask_url


class ServerError(Exception):
    """The model server could not be used; the message is one line for the log."""


def server_at(base_url: str) -> str:
    """How every message names the server (never with the password a URL may hold)."""
    return f"the model server at {mask_url(base_url)}"


@contextlib.contextmanager
def server_errors(base_url: str, timeout_s: float) -> Iterator[None]:
    """aiohttp's exceptions as a ServerError that says what happened and where."""
    where = server_at(base_url)
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise ServerError(f"cannot reach {where}: {connect_reason(exc)}") from None
    except TimeoutError:
        raise ServerError(f"{where} did not answer within {timeout_s:g}s") from None
    except aiohttp.ClientError as exc:  # e.g. the connection dropped mid-reply
        raise ServerError(f"{where} failed: {mask_url(str(exc)) or type(exc).__name__}") from None


def refusal(status: int, body: str, reason: str | None, base_url: str, url: str) -> str:
    """Why the server answered `url` with an error status, from what it sent back."""
    try:
        detail = error_message(json.loads(body))
    except ValueError:
        detail = body.strip() or reason or ""
    detail = detail[:300]
    where = server_at(base_url)
    if status in (401, 403):
        return f"{where} refused the API key (HTTP {status}: {detail})"
    if status == 404:
        return f"{where} has no {mask_url(url)} (HTTP 404): check base_url"
    return f"{where} answered HTTP {status}: {detail}"


def error_message(error: object) -> str:
    """The human part of an error body: OpenAI's {"error": {"message"}}, FastAPI's
    {"detail"}, or whatever it is."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or inner)
        return str(error.get("detail") or inner)
    return str(error)


def connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """E.g. "connection refused", not asyncio's "Connect call failed (...)"."""
    errno = exc.os_error.errno
    text = os.strerror(errno) if errno else str(exc.os_error) or type(exc.os_error).__name__
    return text[:1].lower() + text[1:]
