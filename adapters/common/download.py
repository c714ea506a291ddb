"""Reading a download up to a byte cap: what is past the cap is never read, so a file far
larger than its sender said costs no more than the cap (Discord's text attachments, Discord
and Matrix pictures)."""

from __future__ import annotations

import aiohttp


async def read_capped(
    response: aiohttp.ClientResponse, cap: int, whole: bool = False
) -> tuple[bytes, bool]:
    """At most `cap` bytes of the body, and whether there was more (one byte past the cap is
    read to know it). `whole`: only a whole body is of use (a picture), so a declared length
    over the cap reads nothing."""
    declared = response.content_length
    if whole and declared is not None and declared > cap:
        return b"", True
    body = bytearray()
    while len(body) <= cap:
        chunk = await response.content.read(cap + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body[:cap]), len(body) > cap
