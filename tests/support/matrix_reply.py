"""For driving a MatrixReply: a stand-in for the adapter's Outbox (what the reply would send,
recorded in memory, refused as a homeserver refuses an event over 64 KiB), a question to
answer, and an answer that blows up as HTML."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.events import Incoming

# Matrix's limit on one event, and what encryption makes of content: JSON as nio writes it
# (non-ASCII escaped), in base64, in an envelope of about 2 KB (keys, ids, hashes, signatures).
EVENT_LIMIT = 65_536
ENVELOPE = 2048


def encrypted_event_bytes(content: dict[str, Any]) -> int:
    plaintext = json.dumps({"type": "m.room.message", "content": content, "room_id": "!r:hs"})
    return -(-len(plaintext) // 3) * 4 + ENVELOPE


class RecordingOutbox:
    """The Outbox a MatrixReply talks to, recording what would go to the homeserver."""

    max_length = 60

    def __init__(self, interval: float = 0.2, max_length: int | None = None) -> None:
        self.interval = interval
        if max_length is not None:
            self.max_length = max_length
        self.sent: list[dict[str, Any]] = []
        self.too_large: list[dict[str, Any]] = []  # refused: over 64 KiB once encrypted
        self.typing: dict[str, set[object]] = {}
        self.ready = asyncio.Event()
        self.ready.set()
        self.send_delay = 0.0

    @property
    def edit_interval(self) -> float:
        return self.interval

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=name)

    async def wait_ready(self) -> None:
        await self.ready.wait()

    async def send(self, room_id: str, content: dict[str, Any], must: bool) -> str | None:
        await asyncio.sleep(self.send_delay)
        if encrypted_event_bytes(content) > EVENT_LIMIT:  # M_TOO_LARGE, however often tried
            self.too_large.append(content)
            return None
        self.sent.append(content)
        return f"$sent{len(self.sent)}"

    def typing_on(self, room_id: str, holder: object) -> None:
        self.typing.setdefault(room_id, set()).add(holder)

    def typing_off(self, room_id: str, holder: object) -> None:
        self.typing.get(room_id, set()).discard(holder)


def incoming(channel: str = "!room:hs") -> Incoming:
    return Incoming(
        platform="matrix",
        channel_id=channel,
        message_id="$question",
        author_id="@a:hs",
        author_name="A",
        text="q",
    )


def padded_table(columns: int, length: int = 4000) -> str:
    """A wide header over many one-cell rows: markdown-it pads each row to every column, so
    these 4,000 characters rendered to 669 KB of HTML."""
    text = "|" + "a|" * columns + "\n|" + "-|" * columns + "\n"
    while len(text) < length - 3:
        text += "|x\n"
    return text
