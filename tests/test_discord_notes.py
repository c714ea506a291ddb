"""Notes by consent on the fake Discord (issue #18): a note said in a server is used in that
server's channels for its author only, not in their DM, and `!forget` deletes it."""

from __future__ import annotations

from pathlib import Path

from bot.model.types import Generation, GenerationRequest
from support.daemons import DB
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord, Json
from support.stored import everything_stored


async def test_notes_on_discord(tmp_path: Path, tiny_model: Path, fake: FakeDiscord) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        engine = daemon.backend
        requests: list[GenerationRequest] = []
        start = engine.start

        def recording(request: GenerationRequest) -> Generation:
            requests.append(request)
            return start(request)

        engine.start = recording  # type: ignore[method-assign]

        async def say(user: Json, channel: Json, text: str) -> str:
            return await answer(fake, daemon, await fake.say(user, channel, f"{at(fake)} {text}"))

        def last_turn() -> str:
            return requests[-1].messages[-1]["content"]

        kept = await say(fake.alice, fake.general, "!remember I am allergic to walnuts")
        assert kept.startswith("Noted.")
        assert "I am allergic to walnuts" in await say(fake.alice, fake.other, "!notes")
        assert "no notes about you" in await say(fake.bob, fake.general, "!notes")

        await say(fake.bob, fake.general, "what should I cook?")  # Bob asked for nothing
        assert all("walnuts" not in m["content"] for m in requests[-1].messages)
        await say(fake.alice, fake.other, "what should I cook?")  # same server, other channel
        assert last_turn() == (
            "(Notes Alice asked me to keep about them:)\n- I am allergic to walnuts\n\n"
            "Alice: what should I cook?"
        )
        dm = fake.dm_channel(fake.alice)
        await say(fake.alice, dm, "and for dessert?")  # a note applies where it was said
        assert all("walnuts" not in m["content"] for m in requests[-1].messages)
        assert "Notes: 1 of yours apply here" in await say(fake.alice, fake.general, "!status")

        forgot = await say(fake.alice, fake.general, "!forget")
        assert forgot.startswith("Deleted")
        assert "no notes about you" in await say(fake.alice, fake.other, "!notes")
        assert "walnuts" not in everything_stored(tmp_path / DB)
        assert engine.cache_state(f"discord:{fake.other['id']}") == "cold"
