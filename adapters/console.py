"""The console: chat in the terminal through the same queue, worker and memory as any platform.

On a terminal it shows a prompt and streams the answer as it comes. When stdin is not a
terminal each input line is one user message and each answer is written to stdout, so it can
be scripted; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from typing import TextIO

from adapters.common.failure import ReportsFailure
from bot.events import Incoming, Outcome, Sink

PLATFORM = "console"
CHANNEL = "local"
USER = "local"


class ConsoleReply:
    """One answer printed to the console: streamed as it grows, then the final text."""

    def __init__(self, console: ConsoleAdapter, message: Incoming) -> None:
        self._console = console
        self._message = message
        self._shown = ""
        self.done = asyncio.Event()
        self.held: list[str] = []  # written while another reply had the floor

    async def typing(self) -> None:
        pass  # the prompt is already waiting; nothing to show

    async def update(self, text: str) -> None:
        if text.startswith(self._shown):
            self._write(text[len(self._shown) :])
            self._shown = text

    async def finish(self, text: str) -> None:
        if self._shown and text.startswith(self._shown):
            self._write(text[len(self._shown) :] + "\n")
        else:
            self._write(("\n" if self._shown else "") + text + "\n")
        self._close()

    async def fail(self, notice: str) -> None:
        self._write(("\n" if self._shown else "") + notice + "\n")
        self._close()

    def _write(self, text: str) -> None:
        if not self._shown and text:
            text = self._console.answer_prefix + text
        self._console.say(self, text)

    def _close(self) -> None:
        self.done.set()
        self._console.done_saying(self)


class ConsoleAdapter(ReportsFailure):
    """The Adapter for a local chat: lines from stdin in, answers to stdout out."""

    name = PLATFORM

    def __init__(
        self,
        stdin: TextIO,
        stdout: TextIO,
        user_name: str = "you",
        interactive: bool | None = None,
    ) -> None:
        # A pipe may carry bytes that are not UTF-8: replace them rather than crash the reader.
        if isinstance(stdin, io.TextIOWrapper):
            stdin.reconfigure(errors="replace")
        self._stdin = stdin
        self._stdout = stdout
        self.user_name = user_name
        self.interactive = stdin.isatty() if interactive is None else interactive
        self.answer_prefix = "hearthbot › " if self.interactive else ""
        self.finished = asyncio.Event()  # stdin reached its end and every answer was written
        # The reply to the line just read, so the reader can wait for it.
        self._awaited: tuple[str, ConsoleReply | None] = ("", None)
        self._reader: asyncio.Task[None] | None = None
        self._counter = 0
        self.closed = False  # stdout can no longer be written
        # One reply writes at a time (an answer restored after a restart streams while a
        # command is answered): the others hold their text until it has ended, in order.
        self._speaking: ConsoleReply | None = None
        self._waiting: list[ConsoleReply] = []

    async def start(self, sink: Sink) -> None:
        self._reader = asyncio.create_task(self._read(sink), name="console-reader")

    async def stop(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def is_connected(self) -> bool:
        return True

    def open_reply(self, message: Incoming) -> ConsoleReply:
        reply = ConsoleReply(self, message)
        if self._awaited[0] == message.message_id:
            self._awaited = (message.message_id, reply)
        return reply

    async def refuse(self, message: Incoming, notice: str) -> None:
        await ConsoleReply(self, message).fail(notice)

    def say(self, reply: ConsoleReply, text: str) -> None:
        """Write a reply's text now if it has the floor (or takes it), else hold it."""
        if self._speaking is None and not self._waiting:
            self._speaking = reply
        if self._speaking is reply:
            self.write(text)
            return
        reply.held.append(text)
        if reply not in self._waiting:
            self._waiting.append(reply)

    def done_saying(self, reply: ConsoleReply) -> None:
        """A reply has ended: the next one waiting writes what it held, and keeps the floor
        if it has not ended yet."""
        if self._speaking is reply:
            self._speaking = None
        while self._speaking is None and self._waiting:
            following = self._waiting.pop(0)
            self.write("".join(following.held))
            following.held.clear()
            if not following.done.is_set():
                self._speaking = following
        self.flush()

    def write(self, text: str) -> None:
        if self.closed:
            return
        try:
            self._stdout.write(text)
            if self.interactive:
                self._stdout.flush()
        except (OSError, ValueError):
            self._close_output()

    def flush(self) -> None:
        if self.closed:
            return
        try:
            self._stdout.flush()
        except (OSError, ValueError):
            self._close_output()

    def _close_output(self) -> None:
        """Whoever read our answers went away (a closed pipe): stop reading, end cleanly."""
        self.closed = True
        self.finished.set()
        if self._reader is not None:
            self._reader.cancel()

    def _message(self, line: str) -> Incoming:
        self._counter += 1
        return Incoming(
            platform=PLATFORM,
            channel_id=CHANNEL,
            # Unique across runs: the store drops a message id it has seen before.
            message_id=f"{time.time_ns()}-{self._counter}",
            author_id=USER,
            author_name=self.user_name,
            text=line,
            is_direct=True,
            is_admin=True,  # whoever sits at the console owns the bot
        )

    async def _read(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self.interactive:
                    self.write("you › ")
                line = await _read_line(loop, self._stdin)
                if not line:
                    break
                line = line.rstrip("\n")
                if not line.strip() and not self.interactive:
                    continue
                message = self._message(line)
                self._awaited = (message.message_id, None)
                outcome = await sink(message)
                reply = self._awaited[1]
                self._awaited = ("", None)
                if outcome is Outcome.ACCEPTED and reply is not None:
                    await reply.done.wait()  # one conversation, one turn at a time
        finally:
            if self.interactive:
                self.write("\n")
            self.finished.set()


def _read_line(loop: asyncio.AbstractEventLoop, stream: TextIO) -> asyncio.Future[str]:
    """`stream.readline()` on a daemon thread. Not the default executor: its threads are
    joined at exit, so a SIGTERM while stdin stays open would wait for the next line."""
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        line: str | None = None
        error: BaseException | None = None
        try:
            line = stream.readline()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, future, line, error)

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return future


def _settle(future: asyncio.Future[str], line: str | None, exc: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: the reader was stopped
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(line or "")
