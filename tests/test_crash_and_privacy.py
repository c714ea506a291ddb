"""Whole-process behaviour: kill -9 mid-answer, secrets never leak, no network but the chat
platform. These run `hearthbot chat` as a user would, with the real tiny model."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

LONG_PERSONA = """description = "talks until stopped"
temperature = 0.0
max_tokens = 3000
system_prompt = "You are a test."
"""


def chat_env(tmp_path: Path, model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return env | {
        "HEARTHBOT_MODEL__PATH": str(model),
        "HEARTHBOT_MODEL__N_CTX": "8192",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


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
    cmd = [sys.executable, "-m", "bot.cli", "chat"]
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
    again = subprocess.run(cmd, env=env, input=b"", capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert answered_events(again.stderr.decode()) == 1
    assert again.stdout.strip()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    # And a third start has nothing left to answer.
    third = subprocess.run(cmd, env=env, input=b"", capture_output=True, timeout=60)
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
    chat = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        env=env,
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr[-2000:]
    check = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outputs = [chat.stdout, chat.stderr, check.stdout, check.stderr]
    db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("hearthbot.db*"))
    for secret in SECRETS.values():
        assert all(secret not in text for text in outputs)
        assert secret.encode() not in db_bytes
    assert "**********" in check.stdout  # shown masked, so users see it is set


def test_a_whole_conversation_opens_no_connection(tmp_path: Path, tiny_model: Path) -> None:
    """Run in a network namespace with nothing but loopback, under strace: the console
    conversation makes no connect() at all (Discord and Matrix tests show theirs go only to
    the chat platform)."""
    strace, unshare = shutil.which("strace"), shutil.which("unshare")
    assert strace and unshare, "make test installs strace and util-linux"
    log = tmp_path / "strace.log"
    result = subprocess.run(
        [
            unshare,
            "--net",
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=connect",
            "-o",
            str(log),
            sys.executable,
            "-m",
            "bot.cli",
            "chat",
        ],
        env=chat_env(tmp_path, tiny_model),
        input="hello\n!status\nhow are you?\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count('"event": "answered"') == 2
    calls = [line for line in log.read_text().splitlines() if "connect(" in line]
    inet = [line for line in calls if re.search(r"AF_INET6?\b", line)]
    assert inet == [], inet
