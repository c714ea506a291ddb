"""Whole-process behaviour: kill -9 mid-answer, secrets never leak, no network but the chat
platform. These run `hearthbot chat` (or `run`, on Discord and Matrix) as a user would, with
the real tiny model."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.matrix.state import SESSION_FILE
from support.bot_process import BotProcess, chat_env, inet_connects, settings_env, traced
from support.fake_discord import FakeDiscord, discord_section
from support.persona_files import only_persona
from support.progress import file_sizes, run_progressing
from support.synapse import Peer, Synapse, matrix_section, require_synapse

# Daemons in subprocesses; marked `system` below where they need strace, unshare or Synapse.
pytestmark = pytest.mark.slow

LONG_PERSONA = """description = "talks until stopped"
temperature = 0.0
max_tokens = 3000
system_prompt = "You are a test."
"""


# The longest a healthy `hearthbot chat` goes without output (loading the model, under strace
# too; one answer) on a busy box: a run takes as long as it needs while it gets somewhere.
QUIET_S = 180


def answered_events(stderr: str) -> int:
    return stderr.count('"event": "answered"')


def test_kill_9_mid_answer_then_restart_answers_once(tmp_path: Path, tiny_model: Path) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "long.toml").write_text(LONG_PERSONA)
    env = chat_env(
        tmp_path,
        tiny_model,
        HEARTHBOT_BOT__PERSONAS_DIR=str(personas),
        HEARTHBOT_BOT__DEFAULT_PERSONA="long",
    )
    cmd = [sys.executable, "-m", "bot.app.cli", "chat"]
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"please talk for a long time\n")
    proc.stdin.flush()
    assert proc.stdout.read(64)  # the answer is streaming: kill it mid-way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    db = tmp_path / "data" / "hearthbot.db"
    with sqlite3.connect(db) as conn:  # WAL: the accepted message survived the crash
        users = conn.execute("SELECT text FROM messages WHERE role = 'user'").fetchall()
        pending = conn.execute("SELECT count(*) FROM pending").fetchone()[0]
        answers = conn.execute("SELECT count(*) FROM messages WHERE role = 'assistant'")
        assert (users, pending, answers.fetchone()[0]) == ([("please talk for a long time",)], 1, 0)
    # Restart with nothing new to say: the interrupted message is answered exactly once.
    again = run_progressing(cmd, env=env, quiet_s=QUIET_S)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert answered_events(again.stderr.decode()) == 1
    assert again.stdout.strip()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    # And a third start has nothing left to answer.
    third = run_progressing(cmd, env=env, quiet_s=QUIET_S)
    assert answered_events(third.stderr.decode()) == 0


SECRETS = {
    "HEARTHBOT_DISCORD__TOKEN": "MTIzNDU2Nzg5MDEyMzQ1Njc4.discord-token-value-xyz",
    "HEARTHBOT_MATRIX__PASSWORD": "matrix-password-correct-horse",
    "HEARTHBOT_MATRIX__ACCESS_TOKEN": "syt_matrix_access_token_value",
}


def test_secrets_never_show_in_logs_check_or_database(tmp_path: Path, tiny_model: Path) -> None:
    env = chat_env(tmp_path, tiny_model, **SECRETS) | {"HEARTHBOT_LOG__LEVEL": "debug"}
    commands = [
        "hello",
        "!help",
        "!status",
        "!persona",
        "!persona coder",
        "!temperature 0.4",
        "!seed 3",
        "!seed random",
        "!reset",
        "tell me more",
        "!forget",
        "bye",
    ]
    chat = run_progressing(
        [sys.executable, "-m", "bot.app.cli", "chat"],
        env=env,
        input="\n".join(commands) + "\n",
        text=True,
        quiet_s=QUIET_S,
    )
    assert chat.returncode == 0, chat.stderr[-2000:]
    check = run_progressing(
        [sys.executable, "-m", "bot.app.cli", "check"], env=env, text=True, quiet_s=QUIET_S
    )
    outputs = [chat.stdout, chat.stderr, check.stdout, check.stderr]
    db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("hearthbot.db*"))
    for secret in SECRETS.values():
        assert all(secret not in text for text in outputs)
        assert secret.encode() not in db_bytes
    assert "**********" in check.stdout  # shown masked, so users see it is set


@pytest.mark.system
def test_a_whole_conversation_opens_no_connection(tmp_path: Path, tiny_model: Path) -> None:
    """Run in a network namespace with nothing but loopback, under strace: the console
    conversation makes no connect() at all (Discord and Matrix below: only to the platform)."""
    unshare = shutil.which("unshare")
    assert unshare, "make test installs util-linux"
    log = tmp_path / "strace.log"
    result = run_progressing(
        [unshare, "--net", *traced(log, sys.executable, "-m", "bot.app.cli", "chat")],
        env=chat_env(tmp_path, tiny_model),
        input="hello\n!status\nhow are you?\n",
        text=True,
        quiet_s=QUIET_S,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count('"event": "answered"') == 2
    assert inet_connects(log) == []


def conversation_in_netns(platform: str, tmp_path: Path, model: Path) -> dict[str, Any]:
    """tests/support/netns_conversation.py in a network namespace with only loopback (up, for the
    servers it starts there); its result, with `connects` from the bot's strace log. Its own
    PID namespace too: should the wait give up and kill it, the bot and Synapse die with it."""
    unshare = shutil.which("unshare")
    assert unshare, "make test installs util-linux"
    namespaces = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc")
    # Each step in there has its own bound (BotProcess.until); before the bot writes its
    # log, Synapse starts and accounts are made, which have theirs.
    run = run_progressing(
        [
            *(unshare, *namespaces, "sh", "-c", 'ip link set lo up && exec "$@"', "sh"),
            *(sys.executable, "-m", "support.netns_conversation", platform),
            *(str(model), str(tmp_path)),
        ],
        cwd=Path(__file__).parent,
        text=True,
        quiet_s=300,
        progress=lambda: file_sizes(tmp_path / "bot.log", tmp_path / "strace.log"),
    )
    bot_log = tmp_path / "bot.log"
    logs = bot_log.read_text(errors="replace")[-3000:] if bot_log.exists() else ""
    assert run.returncode == 0, run.stderr[-3000:] + "\n--- bot:\n" + logs
    result: dict[str, Any] = json.loads((tmp_path / "result.json").read_text())
    assert result["returncode"] == 0, logs  # SIGTERM: a clean exit
    return result | {"connects": inet_connects(tmp_path / "strace.log")}


def assert_only_the_platform(result: dict[str, Any]) -> None:
    hello, status, help_, again = result["replies"]
    assert hello.strip() and again.strip()
    assert "Context:" in status and "Commands:" in help_
    platform = {("127.0.0.1", result["port"]), ("::1", result["port"])}
    assert result["connects"], "no connect() seen: the trace would prove nothing"
    assert set(result["connects"]) <= platform, result["connects"]


@pytest.mark.system
def test_a_discord_conversation_connects_only_to_discord(tmp_path: Path, tiny_model: Path) -> None:
    assert_only_the_platform(conversation_in_netns("discord", tmp_path, tiny_model))


@pytest.mark.system
def test_a_matrix_conversation_connects_only_to_the_homeserver(
    tmp_path: Path, tiny_model: Path
) -> None:
    require_synapse()
    assert_only_the_platform(conversation_in_netns("matrix", tmp_path, tiny_model))


# -- kill -9 on Discord and Matrix: `hearthbot run` as a process, the platforms in this loop ----


def counts(db: Path) -> tuple[int, int, int]:
    """(questions, answers, pending) as SQLite holds them: read as a separate connection."""
    with sqlite3.connect(db) as conn:
        questions, answers = (
            conn.execute("SELECT count(*) FROM messages WHERE role = ?", (role,)).fetchone()[0]
            for role in ("user", "assistant")
        )
        (pending,) = conn.execute("SELECT count(*) FROM pending").fetchone()
    return questions, answers, pending


@dataclass
class Platform:
    """What the crash test needs of a platform: connect the bot, say something to it, count
    its replies to a message."""

    env: dict[str, str]
    ready: Callable[[BotProcess], Awaitable[None]]
    say: Callable[[str], Awaitable[str]]  # → the message's id
    replies: Callable[[str], int]
    after_crash: Callable[[], None] = lambda: None  # what a crash may also have cost


async def kill_9_mid_answer_then_restart(tmp_path: Path, model: Path, platform: Platform) -> str:
    """A question answered; a second one killed mid-answer with kill -9; a restart. The
    restart answers the interrupted one once, as a new reply, and nothing else: the platform
    may show it old events again, and they stay answered. Returns the bots' output."""
    personas = {
        name: settings_env("bot", only_persona(tmp_path, name, max_tokens=tokens, temperature=0))
        for name, tokens in (("short", 16), ("long", 3000))
    }
    run = {"out": tmp_path, "model": model, **platform.env}
    async with BotProcess(**run, log_name="1.log", **personas["short"]) as bot:
        await platform.ready(bot)
        earlier = await platform.say("a short question")
        await bot.until(lambda: bot.logged("answered") == 1, "the first answer")
    async with BotProcess(**run, log_name="2.log", **personas["long"]) as bot:
        await platform.ready(bot)
        # A command is answered but never stored: only the platform shows it was answered.
        command = await platform.say("!status")
        await bot.until(lambda: platform.replies(command), "the command's answer")
        asked = await platform.say("please talk for a long time")
        await bot.until(lambda: platform.replies(asked), "the long answer streaming")
        await bot.kill()
    db = tmp_path / "data" / "hearthbot.db"
    assert counts(db) == (2, 1, 1)  # WAL: the question survived; its answer never finished
    platform.after_crash()
    async with BotProcess(**run, log_name="3.log", **personas["short"]) as bot:
        await platform.ready(bot)
        await bot.until(lambda: bot.logged("answered") == 1, "the interrupted one answered")
        await asyncio.sleep(1.5)  # room for old events to be answered again, if they were
    assert bot.returncode == 0 and bot.logged("answered") == 1
    # The frozen half answer and the new one; the earlier question and the command still
    # have one answer each.
    assert [platform.replies(m) for m in (earlier, command, asked)] == [1, 1, 2]
    assert counts(db) == (2, 2, 0)
    return "".join((tmp_path / f"{n}.log").read_text() for n in (1, 2, 3))


async def test_kill_9_on_discord_then_restart_answers_once(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async def ready(bot: BotProcess) -> None:
        await bot.until(lambda: bot.logged("discord ready"), "the gateway READY")

    async def say(text: str) -> str:
        message = await fake.say(fake.alice, fake.general, f"{fake.mention(fake.bot)} {text}")
        return str(message["id"])

    def replies(message_id: str) -> int:
        return len(fake.replies_to({"id": message_id}))

    def positions_lost() -> None:
        """As if the kill came before the adapter ever saved where channels were left: the
        restart reads all of the window back, the answered question and command too."""
        state = tmp_path / "data" / "discord" / "state.json"
        saved = json.loads(state.read_text())
        saved["channels"] = {
            channel: [0, guild] for channel, (_, guild) in saved["channels"].items()
        }
        state.write_text(json.dumps(saved))

    env = settings_env("discord", discord_section(fake))
    output = await kill_9_mid_answer_then_restart(
        tmp_path, tiny_model, Platform(env, ready, say, replies, positions_lost)
    )
    assert fake.token not in output


@pytest.mark.system
async def test_kill_9_on_matrix_then_restart_answers_once(
    tmp_path: Path, tiny_model: Path, synapse: Synapse
) -> None:
    account, person = await synapse.register("bot"), await synapse.register("alice")
    alice = await Peer(synapse, person, tmp_path / "alice").start()
    rooms: list[str] = []

    async def ready(bot: BotProcess) -> None:
        await bot.until(lambda: bot.logged("matrix connected"), "the first sync")
        if not rooms:  # an encrypted DM, as clients open one
            rooms.append(await alice.create_room([account.user_id], direct=True, encrypted=True))
            await bot.until(lambda: alice.joined(rooms[0], account.user_id), "the bot to join")

    async def say(text: str) -> str:
        return await alice.send(rooms[0], text)

    def replies(event_id: str) -> int:
        return sum(
            (s.event.source["content"].get("m.relates_to") or {}).get("m.in_reply_to")
            == {"event_id": event_id}
            for s in alice.messages_from(account.user_id, rooms[0])
        )

    env = settings_env("matrix", matrix_section(synapse, account, edit_interval_s=0.2))
    try:
        output = await kill_9_mid_answer_then_restart(
            tmp_path, tiny_model, Platform(env, ready, say, replies)
        )
    finally:
        await alice.stop()
    session = json.loads((tmp_path / "data" / "matrix" / SESSION_FILE).read_text())
    assert all(secret not in output for secret in (account.password, session["access_token"]))
