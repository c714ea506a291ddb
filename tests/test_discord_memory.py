"""Long memory on the fake Discord (issue #18). Notes by consent: a note said in a server is
used in that server's channels for its author only, not in their DM, and `!forget` deletes
it. Summaries: gone with a forgotten person's words, and rebuilt without them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.model.types import Generation, GenerationRequest
from support.daemons import DB
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord, Json, until
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


async def test_memory_slash_commands(tmp_path: Path, tiny_model: Path, fake: FakeDiscord) -> None:
    """/remember, /notes, /notes clear and /summary run the `!` commands, for the asker's
    eyes only: a note kept by slash command is listed, used in the asker's next prompt and
    deleted by /notes clear; another person's /notes does not show it."""
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        engine = daemon.backend
        requests: list[GenerationRequest] = []
        start = engine.start

        def recording(request: GenerationRequest) -> Generation:
            requests.append(request)
            return start(request)

        engine.start = recording  # type: ignore[method-assign]

        async def run(user: Json, name: str, *options: Json) -> str:
            interaction = await fake.slash(user, fake.general, name, list(options))
            await until(lambda: bool(fake.responses(interaction)), what=f"/{name} answered")
            (response,) = fake.responses(interaction)
            assert response["data"]["flags"] & 64, f"/{name} is shown to the asker only"
            return str(response["data"]["content"])

        note = {"name": "text", "type": 3, "value": "I keep bees on the roof"}
        assert (await run(fake.alice, "remember", note)).startswith("Noted.")
        assert "I keep bees on the roof" in await run(fake.alice, "notes")
        assert "no notes about you" in await run(fake.bob, "notes")
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} any ideas for honey?")
        await answer(fake, daemon, asked)
        assert "- I keep bees on the roof" in requests[-1].messages[-1]["content"]

        clear = {"name": "action", "type": 3, "value": "clear"}
        assert await run(fake.alice, "notes", clear) == "Deleted your 1 notes here."
        assert "no notes about you" in await run(fake.alice, "notes")
        assert "I keep bees on the roof" not in everything_stored(tmp_path / DB)
        assert "No summary here" in await run(fake.alice, "summary")


def held_text(engine: Any) -> str:
    """Everything the engine's KV cache holds: resident sequences and saved snapshots."""
    sequences = [r.tokens for r in engine._pool.residents if not r.forgotten]
    sequences += [list(s.tokens) for s in engine._cache._items.values()]
    detokenize = engine._text._llm.detokenize
    return "\n".join(detokenize(t, special=True).decode(errors="replace") for t in sequences)


async def test_summary_forgotten_and_rebuilt_on_discord(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """Alice and Bob talk until the window trims; the summary is built in idle time. Bob's
    !forget deletes it at once with his messages; it is rebuilt from what remains, and no
    row, summary or cached KV state holds his words."""
    async with hearthbot(tmp_path, tiny_model, fake, n_ctx=1024, chatty_tokens=16) as (
        daemon,
        _adapter,
    ):
        store, engine = daemon.store, daemon.backend
        channel = f"discord:{fake.general['id']}"

        said: list[Json] = []

        async def say(user: Json, text: str) -> str:
            asked = await fake.say(user, fake.general, f"{at(fake)} {text}")
            said.append(asked)
            return await answer(fake, daemon, asked, timeout=60)

        async def summarized() -> bool:
            return await store.summary(channel) is not None

        for i in itertools.count():
            if await store.trimmed(channel, 0, 1):
                break
            await say(fake.alice, f"alice {i}: the kettle is on and the tea is hot " * 3)
            await say(fake.bob, f"bob {i}: my secret word is Quetzalcoatl, keep it " * 3)
        await until_true(summarized, "the summary")
        assert "Summary of what left my context here" in await say(fake.alice, "!summary")
        assert "Quetzalcoatl" in everything_stored(tmp_path / DB)

        assert (await say(fake.bob, "!forget")).startswith("Deleted")
        assert await store.summary(channel) is None  # at once, not at the next rebuild
        assert "no summary" in (await say(fake.alice, "!summary")).lower()
        await say(fake.alice, "and now?")  # the rebuild is lazy: after an answer, when idle
        await until_true(summarized, "the rebuilt summary")
        assert "Quetzalcoatl" not in everything_stored(tmp_path / DB)
        assert "Quetzalcoatl" not in held_text(engine)

        # Alice deletes her first message, which the rebuilt summary covers: it goes too.
        await fake.user_delete(said[0])

        async def gone() -> bool:
            return await store.summary(channel) is None

        await until_true(gone, "the summary to go with the deleted message")
        assert engine.cache_state(channel) == "cold"


async def until_true(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 120
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_summary_in_idle_time_preempted_shown_and_reused_on_discord(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    """Alice talks until the window trims. A summary starts in idle time, Bob's message stops
    it, it is written again once nothing waits; from the next trim the prompts show it right
    after the system prompt, and the turns between trims reuse their cached prefix."""
    queue = {"max_pending": 8, "per_user_per_minute": 1000}  # Alice talks a lot
    async with hearthbot(tmp_path, tiny_model, fake, n_ctx=1024, chatty_tokens=16, queue=queue) as (
        daemon,
        _adapter,
    ):
        store, engine = daemon.store, daemon.backend
        channel = f"discord:{fake.general['id']}"
        generations: list[Generation] = []
        summary_started = asyncio.Event()
        start = engine.start

        def recording(request: GenerationRequest) -> Generation:
            generation = start(request)
            generations.append(generation)
            if (request.cache_key or "").startswith("summary:"):
                summary_started.set()
            return generation

        engine.start = recording  # type: ignore[method-assign]

        async def say(user: Json, text: str) -> None:
            asked = await fake.say(user, fake.general, f"{at(fake)} {text}")
            await answer(fake, daemon, asked, timeout=60)

        def summaries() -> list[Generation]:
            return [g for g in generations if (g.request.cache_key or "").startswith("summary:")]

        async def summarized() -> bool:
            return await store.summary(channel) is not None

        line = "the lighthouse keeper rows out at dawn and the gulls follow him " * 2
        i = 0
        while not await store.trimmed(channel, 0, 1):
            summary_started.clear()
            await say(fake.alice, f"{i}: {line}")
            i += 1
        await asyncio.wait_for(summary_started.wait(), 60)
        (running,) = summaries()
        await say(fake.bob, "a question while the summary is written")
        assert running.result.finish == "cancelled"  # the answer did not wait for it
        await until_true(summarized, "the summary, written again once idle")
        assert len(summaries()) >= 2

        async def shown() -> bool:
            found = await store.summary(channel)
            return found is not None and found.shown is not None

        while not await shown():
            await say(fake.alice, f"{i}: {line}")
            i += 1
        for j in range(4):
            await say(fake.alice, f"after the summary {j}")
        answers = [g for g in generations if g.request.cache_key == channel]
        showing = [g for g in answers if "(a summary):\n" in g.request.messages[0]["content"]]
        assert len(showing) >= 4
        between_trims = 0
        for previous, current in itertools.pairwise(answers):
            before = list(previous.request.prompt or ())
            if list(current.request.prompt or ())[: len(before)] == before:
                assert current.result.reused_tokens >= len(before) - 1
                between_trims += current in showing
        assert between_trims >= 3
