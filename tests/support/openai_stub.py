"""A bare HTTP server on 127.0.0.1 for the openai backend's tests: what a real server will not
do on demand (stall, send a crafted stream, refuse). It answers `GET /props` with 404 (not
llama-server: no pictures), records each request's path and JSON body, and has `respond`
answer the rest."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def stub(respond: Respond) -> tuple[asyncio.Server, str]:
    """The server and its URL; `server.paths` and `server.bodies` record the requests."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        method, path = head.split(b" ")[:2]
        paths.append(f"{method.decode()} {path.decode()}")
        if head.startswith(b"GET /props "):  # asked at load: not llama-server, so no pictures
            writer.write(
                b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if b"content-length" in line.lower()
            ),
            0,
        )
        bodies.append(json.loads(await reader.readexactly(length) or b"null"))
        await respond(reader, writer)

    bodies: list[Any] = []
    paths: list[str] = []
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.writers = writers  # type: ignore[attr-defined]
    server.bodies = bodies  # type: ignore[attr-defined]
    server.paths = paths  # type: ignore[attr-defined]
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def close_stub(server: asyncio.Server) -> None:
    for writer in server.writers:  # type: ignore[attr-defined]
        writer.close()
    server.close()
    await server.wait_closed()


async def never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client hangs up


def sse_then_stall(events: list[str]) -> Respond:
    """Answer with these server-sent events, then keep the connection open."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for event in events:
            data = event.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
        await reader.read()

    return respond
