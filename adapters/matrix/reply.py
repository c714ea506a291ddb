"""One answer on Matrix: a reply to the user's message that streams by `m.replace` edits.

The daemon's worker calls `update()` for every few tokens; it must never wait on the network,
so each call only records the newest text and wakes this reply's own delivery task. That task
sends the first text at once, then at most one edit per `edit_interval` (which the adapter
widens after a 429), and the final text as soon as it is known. Answers longer than one event
continue in follow-up messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from adapters.common.split import split_message
from adapters.matrix.format import edit_content, message_content
from adapters.matrix.rules import split_channel
from bot.events import Incoming


class Outbox(Protocol):
    """What a reply needs from the adapter."""

    max_length: int

    @property
    def edit_interval(self) -> float: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run in the background (None when the adapter is stopped)."""

    async def wait_ready(self) -> None:
        """Until the client is logged in and has synced once (rooms are known)."""

    async def send(self, room_id: str, content: dict[str, Any], must: bool) -> str | None:
        """Send an m.room.message; the event id, or None when it could not be sent."""

    def typing_on(self, room_id: str, holder: object) -> None: ...

    def typing_off(self, room_id: str, holder: object) -> None: ...


class MatrixReply:
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
                content = message_content(
                    text, reply_to=self._reply_to, thread_root=self._thread, msgtype="m.notice"
                )
                await self._outbox.send(self._room_id, content, must=True)
            return
        chunks = split_message(text, self._outbox.max_length) or [text]
        await self._show(chunks[0], must=True)
        for chunk in chunks[1:]:
            content = message_content(chunk, thread_root=self._thread)
            await self._outbox.send(self._room_id, content, must=True)

    def _visible(self, text: str) -> str:
        if len(text) <= self._outbox.max_length:
            return text
        return split_message(text, self._outbox.max_length)[0]

    async def _show(self, text: str, must: bool) -> None:
        if not text.strip() or (text == self._shown and self.event_id is not None):
            return
        if self.event_id is None:
            content = message_content(text, reply_to=self._reply_to, thread_root=self._thread)
            self.event_id = await self._outbox.send(self._room_id, content, must)
        else:
            sent = await self._outbox.send(self._room_id, edit_content(self.event_id, text), must)
            if sent is None:
                return
        if self.event_id is not None:
            self._shown = text
            self._last_sent = time.monotonic()


TYPING_TIMEOUT_MS = 30_000
TYPING_RENEW_S = 20.0


class TypingNotices:
    """One typing notice per room while any answer there is queued or being written, renewed
    before the server lets it expire, withdrawn when the last one is done."""

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[str, bool, int], Awaitable[None]],
    ) -> None:
        self._outbox = outbox
        self._send = send  # (room_id, typing, timeout_ms)
        self._holders: dict[str, set[object]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._keepers: dict[str, asyncio.Task[None]] = {}

    def on(self, room_id: str, holder: object) -> None:
        self._holders.setdefault(room_id, set()).add(holder)
        if room_id not in self._keepers:
            keeper = self._outbox.spawn(self._keep(room_id), name="matrix-typing")
            if keeper is not None:
                self._keepers[room_id] = keeper

    def off(self, room_id: str, holder: object) -> None:
        holders = self._holders.get(room_id)
        if holders is not None and holder in holders:
            holders.discard(holder)
            if not holders and (changed := self._changed.get(room_id)):
                changed.set()

    def cancel(self) -> None:
        for keeper in self._keepers.values():
            keeper.cancel()

    async def _keep(self, room_id: str) -> None:
        changed = self._changed.setdefault(room_id, asyncio.Event())
        try:
            await self._outbox.wait_ready()
            while self._holders.get(room_id):
                await self._send(room_id, True, TYPING_TIMEOUT_MS)
                deadline = time.monotonic() + TYPING_RENEW_S
                while self._holders.get(room_id) and (left := deadline - time.monotonic()) > 0:
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), left)
                if not self._holders.get(room_id):
                    await self._send(room_id, False, TYPING_TIMEOUT_MS)
        finally:
            self._keepers.pop(room_id, None)
            if not self._holders.get(room_id):
                self._holders.pop(room_id, None)
                self._changed.pop(room_id, None)
