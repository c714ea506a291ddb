"""One answer on Matrix: a reply to the user's message that streams by `m.replace` edits.

The daemon's worker calls `update()` for every few tokens; it must never wait on the network,
so each call only records the newest text and wakes this reply's own delivery task. That task
sends the first text at once, then at most one edit per `edit_interval` (which the Outbox
widens after a 429), and the final text as soon as it is known. Answers longer than one event
continue in follow-up messages (adapters/matrix/format.py says what fits one). Content is built
in a thread: rendering Markdown is pure Python, and a long answer must not hold up the loop.
Everything goes out through adapters/matrix/outbox.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from adapters.matrix.format import edit_content, event_parts, message_content
from adapters.matrix.rules import split_channel
from bot.events import Incoming

if TYPE_CHECKING:
    from adapters.matrix.outbox import Outbox


class MatrixReply:
    """A `bot.events.ReplyHandle` for one answer on Matrix, streamed by edits."""

    def __init__(self, outbox: Outbox, message: Incoming) -> None:
        self._outbox = outbox
        self._room_id, self._thread = split_channel(message.channel_id)
        self._reply_to = message.message_id
        self._latest = ""
        # ("answer", text) or ("notice", text); set once by finish() or fail().
        self._final: tuple[str, str] | None = None
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.event_id: str | None = None  # our message, once sent
        self._shown = ""
        self._last_sent = 0.0
        self.done = asyncio.Event()  # the final text went out (or could not)

    # -- ReplyHandle ----------------------------------------------------------------------------

    async def typing(self) -> None:
        if self._final is None:
            self._outbox.typing_on(self._room_id, self)

    async def update(self, text: str) -> None:
        if self._final is None:
            self._latest = text
            self._kick()

    async def finish(self, text: str) -> None:
        self._conclude(("answer", text))

    async def fail(self, notice: str) -> None:
        self._conclude(("notice", notice))

    # -- delivery -------------------------------------------------------------------------------

    def _conclude(self, final: tuple[str, str]) -> None:
        if self._final is not None:
            return
        self._final = final
        self._outbox.typing_off(self._room_id, self)
        self._finished.set()
        self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._task is None:
            self._task = self._outbox.spawn(self._deliver(), name="matrix-reply")
            if self._task is None:  # the adapter is stopped: the message stays pending
                self._outbox.typing_off(self._room_id, self)
                self.done.set()

    async def _deliver(self) -> None:
        try:
            await self._outbox.wait_ready()
            await self._stream()
            await self._send_final()
        finally:
            self._outbox.typing_off(self._room_id, self)
            self.done.set()

    async def _stream(self) -> None:
        while self._final is None:
            await self._wake.wait()
            self._wake.clear()
            if self._final is not None:
                return
            if self.event_id is not None:
                wait = self._last_sent + self._outbox.edit_interval - time.monotonic()
                if wait > 0:  # coalesce: only the newest text after the interval is sent
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._finished.wait(), wait)
                    if self._final is not None:
                        return
            await self._show(self._visible(self._latest), must=False)

    async def _send_final(self) -> None:
        assert self._final is not None
        kind, text = self._final
        if kind == "notice":
            if self.event_id is not None:  # a partial answer is showing: say why it stopped
                await self._show(f"{self._shown}\n\n{text}", must=True)
            else:
                content = await asyncio.to_thread(
                    message_content,
                    text,
                    reply_to=self._reply_to,
                    thread_root=self._thread,
                    msgtype="m.notice",
                )
                await self._outbox.send(self._room_id, content, must=True)
            return
        chunks = event_parts(text, self._outbox.max_length) or [text]
        await self._show(chunks[0], must=True)
        for chunk in chunks[1:]:
            content = await asyncio.to_thread(message_content, chunk, thread_root=self._thread)
            await self._outbox.send(self._room_id, content, must=True)

    def _visible(self, text: str) -> str:
        """What of the answer so far fits the first message (the rest follows at the end)."""
        return (event_parts(text, self._outbox.max_length) or [text])[0]

    async def _show(self, text: str, must: bool) -> None:
        if not text.strip() or (text == self._shown and self.event_id is not None):
            return
        if self.event_id is None:
            content = await asyncio.to_thread(
                message_content, text, reply_to=self._reply_to, thread_root=self._thread
            )
            self.event_id = await self._outbox.send(self._room_id, content, must)
        else:
            edit = await asyncio.to_thread(edit_content, self.event_id, text)
            sent = await self._outbox.send(self._room_id, edit, must)
            if sent is None:
                return
        if self.event_id is not None:
            self._shown = text
            self._last_sent = time.monotonic()
