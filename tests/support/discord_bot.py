"""hearthbot on the fake Discord for tests: the real daemon, DiscordAdapter and discord.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from adapters.discord.adapter import DiscordAdapter
from bot.daemon import Daemon
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store
from support.fake_discord import FakeDiscord, Json, connected, discord_section, until

MESSAGES = r"/channels/\d+/messages"
ONE_MESSAGE = r"/channels/\d+/messages/\d+"
TYPING = r"/channels/\d+/typing"
# Greedy decoding that runs to max_tokens: long, deterministic answers from the tiny model.
CHATTY = """description = "talks until max_tokens"
temperature = 0.0
max_tokens = {max_tokens}
system_prompt = "You are a test."
"""


@asynccontextmanager
async def hearthbot(
    tmp_path: Path,
    model: Path,
    fake: FakeDiscord,
    *,
    chatty_tokens: int = 40,
    n_ctx: int = 2048,
    bot: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
    images: dict[str, Any] | None = None,
    mmproj: Path | None = None,
    **discord: Any,
) -> AsyncIterator[tuple[Daemon, DiscordAdapter]]:
    # Short, deterministic answers unless a test needs long ones: the suite shares two cores.
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "chatty.toml").write_text(CHATTY.format(max_tokens=chatty_tokens))
    bot_section = {
        "data_dir": tmp_path,
        "personas_dir": personas,
        "default_persona": "chatty",
        **(bot or {}),
    }
    settings = load_settings(
        None,
        bot=bot_section,
        discord=discord_section(fake, **discord),
        queue=queue or {"max_pending": 8},
        images=images or {},
    )
    # One thread: llama.cpp's threads spin-wait for each other, which crawls when other
    # processes hold the cores; the tiny model is fast enough on one.
    engine = await LlamaCppBackend.load(model, n_ctx=n_ctx, n_threads=1, mmproj=mmproj)
    store = await Store.open(tmp_path / "hearthbot.db")
    adapter = DiscordAdapter(
        settings.discord,
        settings.bot,
        guild_ready_timeout=0.05,
        reidentify_delay_s=0.0,
        retry_s=0.05,
    )
    personas = load_personas(settings.bot.personas_dir)
    daemon = Daemon(settings, store, engine, personas, {"discord": adapter})
    try:
        await daemon.start()
        await connected(adapter, fake)
        yield daemon, adapter
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
    # discord.py swallows handler exceptions into on_error; the adapter keeps them.
    assert not adapter.errors, list(adapter.errors)


async def answer(fake: FakeDiscord, daemon: Daemon, asked: Json, timeout: float = 20) -> str:
    """The bot's whole answer to `asked`, once the daemon is done with it."""
    await until(lambda: bool(fake.replies_to(asked)), timeout, "a reply")
    await asyncio.wait_for(daemon.wait_idle(), timeout)
    (first,) = fake.replies_to(asked)
    later = [
        m
        for m in fake.bot_messages(fake.channels[int(asked["channel_id"])])
        if int(m["id"]) > int(first["id"]) and "message_reference" not in m
    ]
    return "\n".join(m["content"] for m in [first, *later])


async def first_text(
    fake: FakeDiscord, adapter: DiscordAdapter, asked: Json, who: str = ""
) -> Json:
    """The bot's first message answering `asked`, once the bot holds that message as sent:
    the fake shows it on the POST, before discord.py has read the response, and a reaction
    dispatched in between is on a message the bot cannot know yet is its own."""
    await until(lambda: bool(fake.replies_to(asked)), what=f"{who}first text".strip())
    (ours,) = fake.replies_to(asked)
    known = adapter.interactions.replies
    await until(lambda: int(ours["id"]) in known, what="the bot holding its first text")
    return ours


async def nothing_happens(fake: FakeDiscord, daemon: Daemon) -> None:
    await asyncio.sleep(0.3)
    await daemon.wait_idle()
    assert fake.calls_to("POST", MESSAGES) == []
    assert fake.calls_to("POST", TYPING) == []


def at(fake: FakeDiscord) -> str:
    return fake.mention(fake.bot)


async def texts_in(daemon: Daemon, channel: str) -> list[str]:
    return [m.text for m in await daemon.store.history(channel) if m.role == "user"]


async def quiet(fake: FakeDiscord, daemon: Daemon, said: Json) -> None:
    """Nothing is answered to `said`."""
    await asyncio.sleep(0.3)
    await daemon.wait_idle()
    assert fake.replies_to(said) == []


async def until_true(read: Callable[[], Awaitable[str]], expected: str) -> None:
    """Until `read` gives `expected` (about 10 s at most), which it then must."""
    for _ in range(200):
        if await read() == expected:
            return
        await asyncio.sleep(0.05)
    assert await read() == expected
