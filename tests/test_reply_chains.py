"""Reply chains (issue #17): a reply brings the message it quotes and the chain above it into
the prompt, up to `[bot] reply_chain_tokens`, even when they left the window or were never
stored; read anew at each prompt (quotes as references, issue #13), so a deleted or redacted
message is gone from the next one. The real daemon, engine and SQLite, the in-memory platform."""

from __future__ import annotations

from pathlib import Path

from bot import texts
from bot.daemon import Daemon
from bot.events import Incoming, MessageDeleted, Quoted
from bot.prompt.builder import Prompt
from support.daemons import answered, ask, daemon_for
from support.recording_adapter import RecordingAdapter, message


def test_a_chain_is_shown_oldest_first_as_quoted_text() -> None:
    earlier = [("Bob", "the middle"), ("Carol", "the root\nof it")]
    assert texts.quote("Dave", "the reply", "and?", earlier=earlier) == (
        "(earlier in the reply chain, Carol:)\n> the root\n> of it\n\n"
        "(earlier in the reply chain, Bob:)\n> the middle\n\n"
        "(replying to Dave:)\n> the reply\n\nand?"
    )
    assert texts.quote("Dave", "x", "y", earlier=[]) == texts.quote("Dave", "x", "y")


def on_platform(adapter: RecordingAdapter, said: Incoming, replies_to: str | None = None) -> str:
    """`said` is on the platform (not given to the bot), replying to `replies_to`."""
    adapter.posted[said.message_id] = Quoted(
        said.author_id, said.author_name, said.text, replies_to
    )
    return said.message_id


async def last_user_turn(daemon: Daemon, channel: str = "test:c1") -> str:
    prompt = await daemon.context.build(
        channel, "sys", reserve=64, multi_user=False, through_row=10**9
    )
    assert isinstance(prompt, Prompt)
    return [m["content"] for m in prompt.messages if m["role"] == "user"][-1]


async def test_a_chain_never_stored_is_read_from_the_platform(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        root = on_platform(adapter, message("the root: dinner at 8?", author="c", name="Carol"))
        middle = on_platform(adapter, message("make it 9", author="b", name="Bob"), root)
        await ask(daemon, adapter, "so when is dinner?", reply_to_id=middle)
        assert await last_user_turn(daemon) == (
            "(earlier in the reply chain, Carol:)\n> the root: dinner at 8?\n\n"
            "(replying to Bob:)\n> make it 9\n\nso when is dinner?"
        )
        # Deleted on the platform: gone from the next prompt.
        del adapter.posted[root]
        await daemon.handle(MessageDeleted("test", "c1", root))
        assert (
            await last_user_turn(daemon) == "(replying to Bob:)\n> make it 9\n\nso when is dinner?"
        )


async def test_a_stored_chain_whose_root_left_the_window(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        root = await say(daemon, adapter, message("the root question", author="c", name="Carol"))
        middle = message("a follow-up", author="b", name="Bob", reply_to_id=root.message_id)
        await say(daemon, adapter, middle)
        for i in range(3):
            await ask(daemon, adapter, f"filler {i}")
        last = message("and the answer?", reply_to_id=middle.message_id)
        await daemon.handle(last)
        await daemon.wait_idle()
        history = await daemon.store.history("test:c1")
        # The window moves on past the root and the middle (as trimming would).
        after_middle = next(m.row for m in history if m.text == "filler 0")
        await daemon.store.set_window_start("test:c1", after_middle)
        assert await last_user_turn(daemon) == (
            "(earlier in the reply chain, Carol:)\n> the root question\n\n"
            "(replying to Bob:)\n> a follow-up\n\nand the answer?"
        )
        # A redacted (deleted) root is gone from the next prompt; the middle stays.
        await daemon.handle(MessageDeleted("test", "c1", root.message_id))
        assert (
            await last_user_turn(daemon) == "(replying to Bob:)\n> a follow-up\n\nand the answer?"
        )


async def test_the_chain_stops_at_the_window_and_at_its_token_budget(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model, bot={"reply_chain_tokens": 40}) as (
        daemon,
        adapter,
    ):
        long_root = on_platform(adapter, message("word " * 200, author="c", name="Carol"))
        short = on_platform(adapter, message("short one", author="d", name="Dan"), long_root)
        middle = on_platform(adapter, message("make it 9", author="b", name="Bob"), short)
        await ask(daemon, adapter, "when?", reply_to_id=middle)
        assert await last_user_turn(daemon) == (
            "(earlier in the reply chain, Dan:)\n> short one\n\n"
            "(replying to Bob:)\n> make it 9\n\nwhen?"
        )
        # A chain through a message in the window stops there: it is shown where it is.
        in_window = await say(daemon, adapter, message("in the window"))
        top = on_platform(adapter, message("on top", author="b", name="Bob"), in_window.message_id)
        await ask(daemon, adapter, "and?", reply_to_id=top)
        assert await last_user_turn(daemon) == "(replying to Bob:)\n> on top\n\nand?"
    async with daemon_for(tmp_path, tiny_model, bot={"reply_chain_tokens": 0}) as (
        daemon,
        adapter,
    ):
        root = on_platform(adapter, message("the root", author="c", name="Carol"))
        middle = on_platform(adapter, message("the middle", author="b", name="Bob"), root)
        await ask(daemon, adapter, "only the quote", reply_to_id=middle, channel="c2")
        assert await last_user_turn(daemon, "test:c2") == (
            "(replying to Bob:)\n> the middle\n\nonly the quote"
        )


async def say(daemon: Daemon, adapter: RecordingAdapter, said: Incoming) -> Incoming:
    """`said` is asked, and answered."""
    await daemon.handle(said)
    (record,) = adapter.for_message(said.message_id)
    await answered(record)
    return said
