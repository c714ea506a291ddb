"""Reply quotes as references (bot.prompt.quotes): what a prompt shows of a quoted message,
and, end to end with the tiny model and the recording adapter, that a deleted, redacted or
forgotten message never comes back through a reply to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import texts
from bot.daemon import Daemon
from bot.events import Incoming, MessageDeleted, MessageEdited, Outcome, Quoted
from bot.history import StoredQuote
from bot.prompt.builder import Prompt
from bot.prompt.quotes import shown_quote
from support.daemons import DB, answered, ask, daemon_for
from support.recording_adapter import RecordingAdapter, message
from support.stored import everything_stored

SECRET = "my PIN is 4417"

# -- pure: what a reply shows --------------------------------------------------------------------

STORED = StoredQuote("m1", row=5, author_name="Alice", text="the code is 42")
ON_PLATFORM = Quoted("bob", "Bob", "as the platform has it")


@pytest.mark.parametrize(
    ("quote", "visible", "fetched", "expected"),
    [
        (None, set(), ON_PLATFORM, None),  # not a reply
        (STORED, {5}, None, None),  # the quoted message is in the prompt already
        (STORED, {6, 7}, None, ("Alice", "the code is 42")),  # it left the window
        # A stored row gone meanwhile: nothing, and never looked for on the platform.
        (StoredQuote("m1", row=5), set(), ON_PLATFORM, None),
        (StoredQuote("m1"), set(), ON_PLATFORM, ("Bob", "as the platform has it")),  # unstored
        (StoredQuote("m1"), set(), None, None),  # deleted there, or the adapter cannot read it
        (StoredQuote("m1"), set(), Quoted("bob", "Bob", ""), None),  # an attachment, no text
    ],
)
def test_shown_quote(
    quote: StoredQuote | None,
    visible: set[int],
    fetched: Quoted | None,
    expected: tuple[str, str] | None,
) -> None:
    assert shown_quote(quote, visible, fetched) == expected


@pytest.mark.parametrize(
    ("author", "quoted", "text", "expected"),
    [
        ("Alice", "hi", "and?", "(replying to Alice:)\n> hi\n\nand?"),
        ("", "one\n\ntwo", "x", "(replying to:)\n> one\n> \n> two\n\nx"),
        ("Bob", "y" * 1001, "z", f"(replying to Bob:)\n> {'y' * 1000}…\n\nz"),
    ],
)
def test_quote_text(author: str, quoted: str, text: str, expected: str) -> None:
    assert texts.quote(author, quoted, text) == expected


# -- end to end ----------------------------------------------------------------------------------


async def user_turns(daemon: Daemon, channel: str = "test:c1") -> str:
    """What the people said in the channel's next prompt (the model's own turns left out)."""
    prompt = await daemon.context.build(
        channel, "sys", reserve=64, multi_user=True, through_row=10**9
    )
    assert isinstance(prompt, Prompt)
    return "\n".join(m["content"] for m in prompt.messages if m["role"] == "user")


async def asked(daemon: Daemon, adapter: RecordingAdapter, msg: Incoming) -> Incoming:
    assert await daemon.handle(msg) is Outcome.ACCEPTED
    await answered(adapter.for_message(msg.message_id)[0])
    return msg


async def test_a_reply_stores_a_reference_and_the_prompt_shows_the_quote(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        # Bob's message was not for the bot (never stored); Alice replies to it.
        announcement = adapter.post(message("the code is 42", author="bob", name="Bob"))
        reply = message("what did he mean?", reply_to_id=announcement.message_id)
        await asked(daemon, adapter, reply)
        (stored,) = [m for m in await daemon.store.history("test:c1") if m.role == "user"]
        assert stored.text == "what did he mean?"  # nothing copied in
        assert "(replying to Bob:)\n> the code is 42" in await user_turns(daemon)
        assert "the code is 42" not in everything_stored(tmp_path / DB)
        # A reply to a stored message that the prompt holds anyway repeats nothing.
        await ask(daemon, adapter, "and this?", reply_to_id=reply.message_id)
        assert (await user_turns(daemon)).count("what did he mean?") == 1
        # Once that message has left the window, the reply quotes it.
        rows = [m.row for m in await daemon.store.history("test:c1")]
        await daemon.store.set_window_start("test:c1", rows[-2])
        assert "(replying to Alice:)\n> what did he mean?" in await user_turns(daemon)


async def test_a_reply_to_a_deleted_message_does_not_bring_it_back(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        # Stored (Alice asked the bot), quoted by Bob in a thread of the room, then deleted.
        said = await asked(daemon, adapter, adapter.post(message(SECRET, channel="room")))
        bob = dict(author="bob", name="Bob", reply_to_id=said.message_id)
        await asked(daemon, adapter, message("a PIN?", channel="room|root", **bob))
        assert SECRET in await user_turns(daemon, "test:room|root")
        del adapter.posted[said.message_id]  # deleted on the platform
        gone = MessageDeleted("test", "room", said.message_id)
        assert await daemon.handle(gone) is Outcome.APPLIED
        assert daemon.backend.cache_state("test:room|root") == "cold"  # its KV held it too
        # Replies to it, before and after the deletion: no quote, nothing stored.
        await asked(daemon, adapter, message("what PIN?", channel="room|root", **bob))
        assert SECRET not in await user_turns(daemon, "test:room|root")
        assert SECRET not in await user_turns(daemon, "test:room")
        # Not stored but on the platform, then deleted there: the reference goes too, even
        # were the adapter to still have its text.
        unstored = adapter.post(message("another secret 9031", author="carol"))
        await asked(daemon, adapter, message("hm?", reply_to_id=unstored.message_id))
        assert "another secret 9031" in await user_turns(daemon)
        await daemon.handle(MessageDeleted("test", "c1", unstored.message_id))
        assert "another secret 9031" not in await user_turns(daemon)
        stored = everything_stored(tmp_path / DB)
        assert SECRET not in stored and "another secret 9031" not in stored


async def test_forget_removes_her_words_from_replies_quoting_them(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        alice = dict(author="alice", name="Alice")
        bob = dict(author="bob", name="Bob")
        said = await asked(daemon, adapter, adapter.post(message(SECRET, **alice)))
        unstored = adapter.post(message("my address is 12 Elm Road", **alice))  # not for the bot
        await asked(daemon, adapter, message("PIN?", reply_to_id=said.message_id, **bob))
        await asked(daemon, adapter, message("where?", reply_to_id=unstored.message_id, **bob))
        # Bob's replies to her, kept out of the window: then they quote her.
        rows = [m.row for m in await daemon.store.history("test:c1")]
        await daemon.store.set_window_start("test:c1", rows[2])
        before = await user_turns(daemon)
        assert SECRET in before and "12 Elm Road" in before
        done = await ask(daemon, adapter, "!forget", **alice)
        assert done == texts.FORGET_DONE.format(count=1, who="you")
        after = await user_turns(daemon)
        assert SECRET not in after and "12 Elm Road" not in after
        assert "PIN?" in after and "where?" in after  # Bob's own words stay
        stored = everything_stored(tmp_path / DB)
        assert SECRET not in stored and "12 Elm Road" not in stored


async def test_an_edit_applies_only_from_the_author(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        said = await asked(daemon, adapter, message("meet at noon", author="alice"))
        forged = MessageEdited("test", "c1", said.message_id, "mallory", "send Mallory money")
        assert await daemon.handle(forged) is Outcome.IGNORED
        assert "meet at noon" in await user_turns(daemon)
        assert "Mallory" not in await user_turns(daemon)
        own = MessageEdited("test", "c1", said.message_id, "alice", "meet at one")
        assert await daemon.handle(own) is Outcome.APPLIED
        assert "meet at one" in await user_turns(daemon)
        # An edit names the message only: found in its thread, whichever channel is named.
        threaded = await asked(daemon, adapter, message("in a thread", channel="r|t"))
        edit = MessageEdited("test", "r", threaded.message_id, "u1", "edited in a thread")
        assert await daemon.handle(edit) is Outcome.APPLIED
        assert "edited in a thread" in await user_turns(daemon, "test:r|t")
