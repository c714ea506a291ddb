"""!usage and the footprint in !status on the fake Discord (real discord.py, real daemon and
tiny model): totals per channel and for the whole bot, kept through !forget."""

from __future__ import annotations

from pathlib import Path

from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord


async def test_usage_counts_replies_here_and_everywhere(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        await answer(fake, daemon, await fake.say(fake.alice, fake.general, f"{at(fake)} hi"))
        dm = fake.dm_channel(fake.bob)
        await answer(fake, daemon, await fake.say(fake.bob, dm, "hello from a DM"))

        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} !usage")
        usage = (await answer(fake, daemon, asked)).splitlines()
        assert usage[0].startswith("Here, today: 1 reply, ")
        assert usage[1].startswith("Here, all time: 1 reply, ")
        assert usage[2].startswith("Whole bot, today: 2 replies, ")
        assert usage[3].startswith("Whole bot, all time: 2 replies, ")
        assert all(line.endswith(" Wh estimated") for line in usage)  # no powercap here
        assert "cost" not in usage[0] and "CO₂" not in usage[0]  # neither is configured

        status = await answer(
            fake, daemon, await fake.say(fake.alice, fake.general, f"{at(fake)} !status")
        )
        assert "Last reply here: " in status and "s on the model" in status

        # Alice's words go; what the replies cost stays (it names no one and holds no text).
        await answer(fake, daemon, await fake.say(fake.alice, fake.general, f"{at(fake)} !forget"))
        again = await fake.say(fake.bob, dm, "!usage")
        after = (await answer(fake, daemon, again)).splitlines()
        assert after[2].startswith("Whole bot, today: 2 replies, ")
