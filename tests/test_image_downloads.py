"""Downloads with a byte cap (adapters/common/download.py) against a real aiohttp server on
127.0.0.1: a body that says its length and one that does not (chunked), under, at and over the
cap; and the Matrix media paths (adapters/matrix/media.py) as a table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapters.common.download import read_capped
from adapters.matrix.media import media_path

BODY = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(BODY), 1000):
            await response.write(BODY[start : start + 1000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/declared", declared)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/declared", "/chunked"])
@pytest.mark.parametrize(
    ("cap", "whole", "expected"),
    [
        (len(BODY), True, (BODY, False)),  # exactly the cap: whole
        (len(BODY) + 1, False, (BODY, False)),
        (4000, False, (BODY[:4000], True)),  # a text file: its start, and that it was cut
    ],
)
async def test_read_capped(
    server: str, path: str, cap: int, whole: bool, expected: tuple[bytes, bool]
) -> None:
    async with aiohttp.ClientSession() as http, http.get(server + path) as response:
        assert await read_capped(response, cap, whole) == expected


async def test_a_picture_over_the_cap_reads_nothing_when_its_length_says_so(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server + "/declared") as response:
            assert await read_capped(response, 4000, whole=True) == (b"", True)
        async with http.get(server + "/chunked") as response:  # no length: read to the cap
            body, over = await read_capped(response, 4000, whole=True)
            assert over and len(body) == 4000


@pytest.mark.parametrize(
    ("mxc", "path"),
    [
        ("mxc://example.org/abc", "/_matrix/client/v1/media/download/example.org/abc"),
        ("mxc://localhost:8008/a%b", "/_matrix/client/v1/media/download/localhost%3A8008/a%25b"),
        ("mxc://example.org/a/b", None),
        ("mxc://example.org/", None),
        ("https://example.org/abc", None),
        ("mxc:///abc", None),
        ("", None),
    ],
)
def test_media_path(mxc: str, path: str | None) -> None:
    assert media_path(mxc) == path
