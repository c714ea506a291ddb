"""Trigger modes on Matrix (issue #17) against a real Synapse, with the real daemon, the tiny
real model and a real Store; the people are real matrix-nio clients. Every mode in one group
room: `mention` (the default), `all` with a burst answered once, `name` with the bot's
display name and a keyword, and `off` still running commands; `name` without keywords, set in
the config. And reply chains: one read from the homeserver (never stored), one whose stored
root left the window, each root gone from the next prompt once redacted; and a person's
`!forget` keeping their earlier messages, still on the homeserver, out of every chain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.common.recent import RecentMessages
from adapters.matrix.adapter import MatrixAdapter
from bot import texts
from bot.daemon import Daemon
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.prompt.builder import Prompt
from bot.settings import load_settings
from bot.store import Store
from support.daemons import DB, model_held
from support.stored import pending_count
from support.synapse import Account, Peer, Synapse, matrix_section

pytestmark = [pytest.mark.slow, pytest.mark.system]

NOBODY: dict[str, Any] = {"m.mentions": {}}  # an intentional-mentions client naming no one


@asynccontextmanager
async def bot_running(
    tmp_path: Path, model: Path, server: Synapse, account: Account, **sections: Any
) -> AsyncIterator[Daemon]:
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path, **sections.pop("bot", {})},
        matrix=matrix_section(server, account, **sections),
    )
    engine = await LlamaCppBackend.load(model, n_ctx=2048, n_threads=2)
    store = await Store.open(tmp_path / DB)
    adapter = MatrixAdapter(settings.matrix, settings.bot)
    daemon = Daemon(settings, store, engine, load_personas(None), {"matrix": adapter})  # type: ignore[dict-item]
    try:
        await daemon.start()
        await asyncio.wait_for(adapter.wait_ready(), 20)
        yield daemon
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()


@asynccontextmanager
async def person(server: Synapse, tmp_path: Path, prefix: str) -> AsyncIterator[Peer]:
    someone = Peer(server, await server.register(prefix), tmp_path / f"peer-{prefix}")
    await someone.start()
    try:
        yield someone
    finally:
        await someone.stop()


async def test_every_trigger_mode_in_a_group_room(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    await synapse.set_displayname(account, "Hearthbot")
    async with (
        person(synapse, tmp_path, "alice") as alice,
        person(synapse, tmp_path, "carol") as carol,
    ):
        sections = {"admins": [alice.user_id], "bot": {"keywords": ["oracle"]}}
        async with bot_running(tmp_path, tiny_model, synapse, account, **sections) as daemon:
            bot_id = account.user_id
            room = await alice.create_room(invite=[bot_id, carol.user_id])
            await carol.wait_for(lambda: room in carol.client.invited_rooms)
            await carol.join(room)
            await alice.wait_for(lambda: alice.joined(room, bot_id))
            to_bot: dict[str, Any] = {"m.mentions": {"user_ids": [bot_id]}}

            async def answered(event_id: str, timeout: float = 120) -> str:
                reply = await alice.wait_for(lambda: alice.reply_to(bot_id, event_id), timeout)
                await asyncio.wait_for(daemon.wait_idle(), timeout)
                return alice.latest_text(reply.event.event_id)

            async def ignored(event_id: str) -> None:
                await asyncio.sleep(0.5)
                await asyncio.wait_for(daemon.wait_idle(), 30)
                assert alice.reply_to(bot_id, event_id) is None

            # mention (the default): chat among people is not for the bot.
            await ignored(await carol.send(room, "just chatting", **NOBODY))
            said = await alice.send(room, "Hearthbot: !trigger all", **to_bot)
            assert await answered(said) == texts.TRIGGER_SET.format(what=texts.TRIGGER_WHAT["all"])
            # all: everyone's messages; commands need no mention, and are still checked.
            refused = await carol.send(room, "!trigger off", **NOBODY)
            assert await answered(refused) == texts.NOT_ADMIN.format(name="trigger")
            assert await answered(await carol.send(room, "anyone around?", **NOBODY))
            # A burst while the answer before it is held: one answer for the burst.
            async with model_held(daemon.backend):
                first = await alice.send(room, "first", **NOBODY)
                await alice.wait_for(lambda: daemon.status().answering == 1 or None)
                burst = [
                    await who.send(room, f"burst {i}", **NOBODY)
                    for i, who in enumerate([carol, alice, carol])
                ]
                await alice.wait_for(lambda: pending_count(tmp_path / DB) == 4 or None)
            await answered(first)
            await answered(burst[-1])
            assert [alice.reply_to(bot_id, b) for b in burst[:-1]] == [None, None]
            assert pending_count(tmp_path / DB) == 0
            # name: the display name or a keyword, as whole words.
            said = await alice.send(room, "!trigger name", **NOBODY)
            assert "my name" in await answered(said)
            assert await answered(await carol.send(room, "what says the Oracle?", **NOBODY))
            assert await answered(await carol.send(room, "hearthbot, hello", **NOBODY))
            await ignored(await carol.send(room, "the oracles of old", **NOBODY))
            await ignored(await alice.send(room, "!status", **NOBODY))  # not said to it
            # off: commands only, when spoken to.
            said = await alice.send(room, "Hearthbot: !trigger off", **to_bot)
            assert "commands only" in await answered(said)
            await ignored(await carol.send(room, "Hearthbot: hello?", **to_bot))
            status = await alice.send(room, "Hearthbot: !trigger", **to_bot)
            assert "commands only" in await answered(status)


async def test_a_reply_chain_never_stored_and_its_redacted_root(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """In mention mode the people's messages above a reply are not stored: the prompt reads
    them from the homeserver; a root redacted since is gone from the next prompt."""
    account = await synapse.register("bot")
    async with (
        person(synapse, tmp_path, "alice") as alice,
        person(synapse, tmp_path, "carol") as carol,
        bot_running(tmp_path, tiny_model, synapse, account) as daemon,
    ):
        bot_id = account.user_id
        room = await alice.create_room(invite=[bot_id, carol.user_id])
        await carol.wait_for(lambda: room in carol.client.invited_rooms)
        await carol.join(room)
        await alice.wait_for(lambda: alice.joined(room, bot_id))

        def replying(to: str, **more: Any) -> dict[str, Any]:
            return {"m.relates_to": {"m.in_reply_to": {"event_id": to}}, **more}

        root = await carol.send(room, "dinner at 8?", **NOBODY)
        middle = await alice.send(room, "make it 9", **replying(root, **NOBODY))
        asked = await carol.send(
            room, "so when?", **replying(middle, **{"m.mentions": {"user_ids": [bot_id]}})
        )
        await alice.wait_for(lambda: alice.reply_to(bot_id, asked), 120)
        await asyncio.wait_for(daemon.wait_idle(), 120)
        channel = f"matrix:{room}"

        async def prompt_of_the_reply() -> str:
            prompt = await daemon.context.build(
                channel, "sys", reserve=64, multi_user=False, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            return next(m["content"] for m in prompt.messages if m["role"] == "user")

        def name(someone: Peer) -> str:  # their display name: Synapse's default, the localpart
            return someone.user_id[1:].split(":")[0]

        middle_part = f"(replying to {name(alice)}:)\n> make it 9\n\nso when?"
        assert await prompt_of_the_reply() == (
            f"(earlier in the reply chain, {name(carol)}:)\n> dinner at 8?\n\n" + middle_part
        )
        await carol.client.room_redact(room, root, reason="changed my mind")
        for _ in range(200):
            if await prompt_of_the_reply() == middle_part:
                break
            await asyncio.sleep(0.05)
        assert await prompt_of_the_reply() == middle_part


async def test_a_forgotten_persons_messages_leave_reply_chains(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """Carol's `!forget`: her message the bot never stored (mention mode), still on the
    homeserver, no longer enters a prompt through a reply chain, nor through a new reply."""
    account = await synapse.register("bot")
    async with (
        person(synapse, tmp_path, "alice") as alice,
        person(synapse, tmp_path, "carol") as carol,
        bot_running(tmp_path, tiny_model, synapse, account) as daemon,
    ):
        bot_id = account.user_id
        to_bot = {"m.mentions": {"user_ids": [bot_id]}}  # (a pill names the bot's user id)
        room = await alice.create_room(invite=[bot_id, carol.user_id])
        await carol.wait_for(lambda: room in carol.client.invited_rooms)
        await carol.join(room)
        await alice.wait_for(lambda: alice.joined(room, bot_id))

        def replying(to: str, **more: Any) -> dict[str, Any]:
            return {"m.relates_to": {"m.in_reply_to": {"event_id": to}}, **more}

        async def answered(event_id: str) -> None:
            await alice.wait_for(lambda: alice.reply_to(bot_id, event_id), 120)
            await asyncio.wait_for(daemon.wait_idle(), 120)

        async def user_turns() -> str:
            prompt = await daemon.context.build(
                f"matrix:{room}", "sys", reserve=64, multi_user=True, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            return "\n".join(m["content"] for m in prompt.messages if m["role"] == "user")

        root = await carol.send(room, "dinner at 8?", **NOBODY)
        middle = await alice.send(room, "make it 9", **replying(root, **NOBODY))
        asked = await alice.send(room, "so when?", **replying(middle, **to_bot))
        await answered(asked)
        assert "dinner at 8?" in await user_turns()
        forget = await carol.send(room, f"{bot_id}: !forget", **to_bot)
        await answered(forget)
        turns = await user_turns()
        assert "dinner at 8?" not in turns and "make it 9" in turns
        adapter = daemon.adapters["matrix"]
        assert isinstance(adapter, MatrixAdapter)
        adapter.translator.recent = RecentMessages()  # as after a restart: asked of Synapse
        turns = await user_turns()
        assert "dinner at 8?" not in turns and "make it 9" in turns
        again = await alice.send(room, "what was it?", **replying(root, **to_bot))
        await answered(again)
        turns = await user_turns()
        assert "what was it?" in turns and "dinner at 8?" not in turns


async def test_name_mode_without_keywords_and_a_chain_whose_root_left_the_window(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """`[matrix] trigger = "name"` without `[bot] keywords`: only the bot's display name calls
    it. A reply chain whose stored root left the window is shown above the reply; redacted,
    the root is gone from the next prompt."""
    account = await synapse.register("bot")
    await synapse.set_displayname(account, "Hearthbot")
    async with (
        person(synapse, tmp_path, "alice") as alice,
        person(synapse, tmp_path, "carol") as carol,
        bot_running(tmp_path, tiny_model, synapse, account, trigger="name") as daemon,
    ):
        bot_id = account.user_id
        room = await alice.create_room(invite=[bot_id, carol.user_id])
        await carol.wait_for(lambda: room in carol.client.invited_rooms)
        await carol.join(room)
        await alice.wait_for(lambda: alice.joined(room, bot_id))
        channel = f"matrix:{room}"

        async def answered(event_id: str) -> None:
            await alice.wait_for(lambda: alice.reply_to(bot_id, event_id), 120)
            await asyncio.wait_for(daemon.wait_idle(), 120)

        def replying(to: str) -> dict[str, Any]:
            return {"m.relates_to": {"m.in_reply_to": {"event_id": to}}, **NOBODY}

        root = await carol.send(room, "hearthbot, the root question", **NOBODY)
        await answered(root)
        ignored = await carol.send(room, "what says the oracle?", **NOBODY)
        middle = await alice.send(room, "Hearthbot: a follow-up", **replying(root))
        await answered(middle)
        assert alice.reply_to(bot_id, ignored) is None  # no keywords: a word is just a word
        for i in range(2):
            await answered(await alice.send(room, f"hearthbot filler {i}", **NOBODY))
        last = await alice.send(room, "hearthbot, and the answer?", **replying(middle))
        await answered(last)
        history = await daemon.store.history(channel)
        assert [m.text for m in history if m.role == "user"] == [
            "hearthbot, the root question",
            "Hearthbot: a follow-up",  # named, not mentioned: taken as written
            "hearthbot filler 0",
            "hearthbot filler 1",
            "hearthbot, and the answer?",
        ]
        after_middle = next(m.row for m in history if m.text == "hearthbot filler 0")
        await daemon.store.set_window_start(channel, after_middle)  # as trimming would

        async def last_user_turn() -> str:
            prompt = await daemon.context.build(
                channel, "sys", reserve=64, multi_user=False, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            return [m["content"] for m in prompt.messages if m["role"] == "user"][-1]

        def name(someone: Peer) -> str:  # their display name: Synapse's default, the localpart
            return someone.user_id[1:].split(":")[0]

        tail = (
            f"(replying to {name(alice)}:)\n> Hearthbot: a follow-up\n\nhearthbot, and the answer?"
        )
        assert await last_user_turn() == (
            f"(earlier in the reply chain, {name(carol)}:)\n> hearthbot, the root question\n\n"
            + tail
        )
        await carol.client.room_redact(room, root, reason="changed my mind")
        for _ in range(200):
            if await last_user_turn() == tail:
                break
            await asyncio.sleep(0.05)
        assert await last_user_turn() == tail
