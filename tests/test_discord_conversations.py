"""More of issue #17 on Discord (the real daemon, DiscordAdapter and discord.py against the fake
Discord): `name` mode without `[bot] keywords` (only the bot's own name calls it), set in the
config; and a reply chain whose stored root left the channel's window, deleted on Discord
afterwards."""

from __future__ import annotations

from pathlib import Path

from bot.prompt.builder import Prompt
from support.discord_bot import answer, at, hearthbot, quiet, texts_in, until_true
from support.fake_discord import FakeDiscord


async def test_name_mode_without_keywords_from_the_config(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, trigger="name") as (daemon, _adapter):
        general = f"discord:{fake.general['id']}"
        by_name = await fake.say(fake.alice, fake.general, "Hearthbot: what's for lunch?")
        assert await answer(fake, daemon, by_name)
        await quiet(fake, daemon, await fake.say(fake.bob, fake.general, "ask the oracle"))
        await quiet(fake, daemon, await fake.say(fake.bob, fake.general, "my hearthbots"))
        mention = await fake.say(fake.bob, fake.general, f"{at(fake)} a mention works too")
        assert await answer(fake, daemon, mention)
        assert await texts_in(daemon, general) == [
            "Hearthbot: what's for lunch?",
            "a mention works too",
        ]


async def test_a_reply_chain_whose_root_left_the_window(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        channel = f"discord:{fake.general['id']}"
        root = await fake.say(fake.bob, fake.general, f"{at(fake)} the root question")
        await answer(fake, daemon, root)
        middle = await fake.say(
            fake.alice, fake.general, f"{at(fake)} a follow-up", reply_to=root, ping=False
        )
        await answer(fake, daemon, middle)
        for i in range(2):
            await answer(fake, daemon, await fake.say(fake.admin, fake.general, f"{at(fake)} {i}"))
        last = await fake.say(
            fake.alice, fake.general, f"{at(fake)} and the answer?", reply_to=middle, ping=False
        )
        await answer(fake, daemon, last)
        history = await daemon.store.history(channel)
        # The window moves on past the root and the middle (as trimming would).
        after_middle = next(m.row for m in history if m.text == "0")
        await daemon.store.set_window_start(channel, after_middle)

        async def last_user_turn() -> str:
            prompt = await daemon.context.build(
                channel, "sys", reserve=64, multi_user=True, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            return [m["content"] for m in prompt.messages if m["role"] == "user"][-1]

        bob = fake.bob.get("global_name") or fake.bob["username"]
        alice = fake.alice.get("global_name") or fake.alice["username"]
        assert await last_user_turn() == (
            f"{alice}: (earlier in the reply chain, {bob}:)\n> the root question\n\n"
            f"(replying to {alice}:)\n> a follow-up\n\nand the answer?"
        )
        await fake.user_delete(root)  # deleted on Discord: gone from the next prompt
        gone = f"{alice}: (replying to {alice}:)\n> a follow-up\n\nand the answer?"
        await until_true(last_user_turn, gone)
