"""The console adapter's output: replies open at once (an answer restored after a restart
while a command is answered) never write into each other."""

from __future__ import annotations

import io

from adapters.console import ConsoleAdapter
from bot.events import Incoming


def incoming(message_id: str) -> Incoming:
    return Incoming(
        platform="console",
        channel_id="local",
        message_id=message_id,
        author_id="local",
        author_name="you",
        text="hi",
        is_direct=True,
    )


async def test_a_reply_written_while_another_streams_waits_for_it_to_end() -> None:
    """The property test through the console saw "is" + "Cleared this channel's history" +
    ". love nice …": a command's answer written into an answer being streamed."""
    out = io.StringIO()
    console = ConsoleAdapter(io.StringIO(""), out, interactive=False)
    streaming = console.open_reply(incoming("1"))
    command = console.open_reply(incoming("2"))
    await streaming.update("Hello")
    await command.finish("Cleared.")
    await console.refuse(incoming("3"), "Busy.")
    assert out.getvalue() == "Hello"
    await streaming.update("Hello, world")
    await streaming.finish("Hello, world!")
    assert out.getvalue() == "Hello, world!\nCleared.\nBusy.\n"


async def test_replies_that_take_turns_are_written_as_they_come() -> None:
    out = io.StringIO()
    console = ConsoleAdapter(io.StringIO(""), out, interactive=False)
    first, second = console.open_reply(incoming("1")), console.open_reply(incoming("2"))
    await first.finish("One.")
    await second.update("Tw")
    assert out.getvalue() == "One.\nTw"
    await second.fail("Stopped.")
    await console.refuse(incoming("3"), "Busy.")
    assert out.getvalue() == "One.\nTw\nStopped.\nBusy.\n"
