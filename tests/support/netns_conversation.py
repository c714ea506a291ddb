"""A whole conversation with the real daemon (`python -m bot.app.cli run`, traced by strace) on
Discord (the fake in tests/support/fake_discord.py) or Matrix (a real Synapse, an encrypted
DM), every server on 127.0.0.1. tests/test_crash_and_privacy.py runs it inside a network
namespace that has nothing but loopback, then reads the strace log: the bot's connect() calls
may go to the chat platform only.

    cd tests && python -m support.netns_conversation discord|matrix MODEL OUT

writes OUT/strace.log (the bot's connect() calls), OUT/bot.log (its output) and
OUT/result.json: {"port": the platform's port, "returncode": the bot's, "replies": [...]}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from support.bot_process import BotProcess, settings_env
from support.fake_discord import FakeDiscord, discord_section
from support.synapse import Peer, Synapse, matrix_section

# Questions go to the model; `!` lines are commands, answered without it.
CONVERSATION = ["hello, who are you?", "!status", "!help", "and what can you do?"]

Say = Callable[[str], Awaitable[Callable[[], str]]]  # a message → a reader of its reply


async def converse(bot: BotProcess, say: Say) -> list[Callable[[], str]]:
    """CONVERSATION, waiting for each reply (and for each model answer to be complete);
    readers of the replies' texts, to read once the bot has stopped (its last edits sent)."""
    replies, questions = [], 0
    for text in CONVERSATION:
        replies.append(await say(text))
        if not text.startswith("!"):
            questions += 1
            await bot.until(lambda n=questions: bot.logged("answered") >= n, f"answer {questions}")
    return replies


def result(port: int, bot: BotProcess, replies: list[Callable[[], str]]) -> dict[str, Any]:
    return {"port": port, "returncode": bot.returncode, "replies": [read() for read in replies]}


async def discord(out: Path, model: Path) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        fake = FakeDiscord()
        await fake.start()
        stack.push_async_callback(fake.close)

        async def say(text: str) -> Callable[[], str]:
            asked = await fake.say(fake.alice, fake.general, f"{fake.mention(fake.bot)} {text}")
            await bot.until(lambda: fake.replies_to(asked), f"a reply to {text!r}")
            return lambda: str(fake.replies_to(asked)[0]["content"])  # edited in place

        settings = settings_env("discord", discord_section(fake))
        async with BotProcess(out, model, trace=out / "strace.log", **settings) as bot:
            await bot.until(lambda: bot.logged("discord ready"), "the bot on the gateway")
            await bot.until(lambda: fake.commands, "slash commands synced")
            replies = await converse(bot, say)
        return result(fake.port, bot, replies)


async def matrix(out: Path, model: Path) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        server = Synapse(out / "synapse")
        server.start()
        stack.callback(server.stop)
        account, person = await server.register("bot"), await server.register("alice")
        alice = await Peer(server, person, out / "alice").start()
        stack.push_async_callback(alice.stop)

        async def say(text: str) -> Callable[[], str]:
            asked = await alice.send(room, text)
            await bot.until(lambda: alice.reply_to(account.user_id, asked), f"a reply to {text!r}")
            reply = alice.reply_to(account.user_id, asked)
            assert reply is not None
            return lambda: alice.latest_text(reply.event.event_id)

        async with BotProcess(
            out,
            model,
            trace=out / "strace.log",
            **settings_env(
                "matrix",
                matrix_section(server, account, allowed_users=[alice.user_id], edit_interval_s=0.2),
            ),
        ) as bot:
            await bot.until(lambda: bot.logged("matrix connected"), "the bot's first sync")
            # An encrypted DM, as Matrix clients open one by default.
            room = await alice.create_room(invite=[account.user_id], direct=True, encrypted=True)
            await bot.until(lambda: alice.joined(room, account.user_id), "the bot to join")
            replies = await converse(bot, say)
        return result(server.port, bot, replies)


async def main(platform: str, model: Path, out: Path) -> None:
    outcome = await {"discord": discord, "matrix": matrix}[platform](out, model)
    (out / "result.json").write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
