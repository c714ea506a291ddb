"""A whole conversation with the real daemon (`python -m bot.cli run`, traced by strace) on
Discord (the fake in tests/fake_discord.py) or Matrix (a real Synapse, an encrypted DM), every
server on 127.0.0.1. tests/test_crash_and_privacy.py runs it inside a network namespace that
has nothing but loopback, then reads the strace log: the bot's connect() calls may go to the
chat platform only.

    python tests/netns_conversation.py discord|matrix MODEL OUT

writes OUT/strace.log (the bot's connect() calls), OUT/bot.log (its output) and
OUT/result.json: {"port": the platform's port, "returncode": the bot's, "replies": [...]}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fake_discord import FakeDiscord, discord_section, until
from synapse import Peer, Synapse

# Questions go to the model; `!` lines are commands, answered without it.
CONVERSATION = ["hello, who are you?", "!status", "!help", "and what can you do?"]
WAIT_S = 120  # per step: two shared cores, and strace slows every syscall

Say = Callable[[str], Awaitable[Callable[[], str]]]  # a message → a reader of its reply


def chat_env(tmp_path: Path, model: Path, **extra: str) -> dict[str, str]:
    """This environment without any hearthbot settings, then the tiny model and its data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return env | {
        "HEARTHBOT_MODEL__PATH": str(model),
        "HEARTHBOT_MODEL__N_CTX": "8192",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def traced(log: Path, *command: str) -> list[str]:
    """`command` under strace: every connect() of every thread and child process, to `log`."""
    strace = shutil.which("strace")
    assert strace, "make test installs strace"
    return [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(log), *command]


_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")


def inet_connects(log: Path) -> list[tuple[str, int]]:
    """(address, port) of every AF_INET/AF_INET6 connect() in a `traced` log."""
    found = []
    for line in log.read_text().splitlines():
        if "connect(" not in line or not re.search(r"AF_INET6?\b", line):
            continue
        address, port = _ADDRESS.search(line), _PORT.search(line)
        assert address and port, f"a connect() this test cannot read: {line}"
        found.append((address.group(1) or address.group(2), int(port.group(1))))
    return found


class TracedBot:
    """`hearthbot run` as a subprocess under strace, its output in OUT/bot.log. As a context
    manager: stopped by SIGTERM on the way out, its exit code then in `returncode`."""

    def __init__(self, out: Path, model: Path, **settings: str) -> None:
        self.log = out / "bot.log"
        env = chat_env(
            out,
            model,
            HEARTHBOT_HEALTH__LISTEN="",  # off: the bot's only sockets are the platform's
            HEARTHBOT_MODEL__N_THREADS="1",  # llama.cpp's threads spin; the cores are shared
            **settings,
        )
        command = traced(out / "strace.log", sys.executable, "-m", "bot.cli", "run")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, env=env, cwd=out, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.returncode: int | None = None

    def logged(self, event: str) -> int:
        return self.log.read_text(errors="replace").count(f'"event": "{event}"')

    async def until(self, condition: Callable[[], object], what: str) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"the bot exited waiting for {what}:\n{tail}")
            return bool(condition())

        await until(check, WAIT_S, what)

    async def __aenter__(self) -> TracedBot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # SIGTERM to the bot, strace's child (strace ignores it); strace passes on its exit
        # code. Awaited, so the servers in this loop serve the bot's goodbyes.
        if self.proc.poll() is None:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            os.kill(int(children.split()[0]), signal.SIGTERM)
        await until(lambda: self.proc.poll() is not None, 60, "the bot to exit")
        self.returncode = self.proc.returncode


async def converse(bot: TracedBot, say: Say) -> list[Callable[[], str]]:
    """CONVERSATION, waiting for each reply (and for each model answer to be complete);
    readers of the replies' texts, to read once the bot has stopped (its last edits sent)."""
    replies, questions = [], 0
    for text in CONVERSATION:
        replies.append(await say(text))
        if not text.startswith("!"):
            questions += 1
            await bot.until(lambda n=questions: bot.logged("answered") >= n, f"answer {questions}")
    return replies


def result(port: int, bot: TracedBot, replies: list[Callable[[], str]]) -> dict[str, Any]:
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

        section = discord_section(fake)
        settings = {f"HEARTHBOT_DISCORD__{k.upper()}": str(v) for k, v in section.items()}
        async with TracedBot(out, model, **settings) as bot:
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

        async with TracedBot(
            out,
            model,
            HEARTHBOT_MATRIX__HOMESERVER=server.url,
            HEARTHBOT_MATRIX__USER_ID=account.user_id,
            HEARTHBOT_MATRIX__PASSWORD=account.password,
            HEARTHBOT_MATRIX__ALLOWED_USERS=json.dumps([alice.user_id]),
            HEARTHBOT_MATRIX__EDIT_INTERVAL_S="0.2",
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
