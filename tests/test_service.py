"""The daemon as systemd runs it: a real `python -m bot.app.cli chat` subprocess, a real
NOTIFY_SOCKET bound by the test, WATCHDOG_USEC, and real signals (SIGTERM mid-answer, SIGHUP).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from bot import texts
from support.stored import pending_count

# The daemon in a subprocess.
pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "bot.app.cli", "chat"]
LONG_PERSONA = """description = "never stops by itself"
temperature = 0.0
max_tokens = 8000
system_prompt = "You are a test."
"""
PERSONA = """description = "{name} persona"
system_prompt = "You are {name}."
"""


class Notifications:
    """The test's end of NOTIFY_SOCKET: every datagram the daemon sends, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def wait_for(self, accept: Callable[[dict[str, str]], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                raw = self.sock.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"not notified in time; got {self.seen}") from None
            fields = dict(line.split("=", 1) for line in raw.split("\n"))
            self.seen.append(fields)
            if accept(fields):
                return fields

    def wait_key(self, key: str, timeout: float = 60) -> dict[str, str]:
        return self.wait_for(lambda fields: key in fields, timeout)


class Lines:
    """A pipe read line by line on a thread, so the test can wait for output."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            self.lines.put(raw.decode("utf-8", errors="replace"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{text!r} never came; got {self.all}") from None
            self.all.append(line)
            if text in line:
                return line

    def rest(self) -> str:
        """Everything, once the process has closed the pipe."""
        self._thread.join(10)
        while not self.lines.empty():
            self.all.append(self.lines.get())
        return "".join(self.all)


@pytest.fixture
def notify() -> Iterator[Notifications]:
    folder = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))  # socket paths: ≤ 108 bytes
    notifications = Notifications(folder / "notify.sock")
    yield notifications
    notifications.sock.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path, notify: Notifications) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HEARTHBOT_", "WATCHDOG"))}
    for name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET"):
        clean.pop(name, None)
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "long.toml").write_text(LONG_PERSONA)
    return clean | {
        "HOME": str(tmp_path),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        "HEARTHBOT_MODEL__PATH": str(tiny_model),
        "HEARTHBOT_MODEL__N_CTX": "8192",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "data"),
        "HEARTHBOT_BOT__PERSONAS_DIR": str(personas),
    }


def start(env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        CLI,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=env["HOME"],
        **kw,  # type: ignore[call-overload]
    )


def test_notify_watchdog_and_sigterm_mid_answer(
    env: dict[str, str], notify: Notifications, tmp_path: Path
) -> None:
    long_env = env | {
        "HEARTHBOT_BOT__DEFAULT_PERSONA": "long",
        "HEARTHBOT_BOT__SHUTDOWN_GRACE_S": "0.3",
    }
    proc = start(long_env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        loading = notify.wait_key("EXTEND_TIMEOUT_USEC")
        assert loading["STATUS"].startswith("Loading model")
        ready = notify.wait_key("READY")
        assert ready["READY"] == "1" and "console" in ready["STATUS"]
        for _ in range(3):  # the event loop keeps the watchdog fed
            notify.wait_key("WATCHDOG", timeout=5)
        proc.stdin.write(b"go on forever\n")
        proc.stdin.flush()
        notify.wait_for(lambda f: "answering" in f.get("STATUS", ""), timeout=30)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert notify.wait_key("STOPPING", timeout=10)["STOPPING"] == "1"
        returncode = proc.wait(timeout=30)  # stdin still open: the signal alone ends it
        took = time.monotonic() - sent
    finally:
        proc.kill()
    logs = err.rest()
    assert returncode == 0, logs
    # An 8,000-token answer takes far longer: it was stopped after the grace period...
    assert "grace period over" in logs and took < 10
    # ...with a final notice instead of a frozen half answer, and it is still pending.
    assert out.rest().rstrip().endswith(texts.SHUTTING_DOWN)
    assert "Traceback" not in logs
    data = tmp_path / "data"
    assert pending_count(data / "hearthbot.db") == 1
    # The next start answers it (with the default persona: quick), exactly once.
    again = subprocess.run(
        CLI,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={k: v for k, v in env.items() if k != "NOTIFY_SOCKET"},
        cwd=env["HOME"],
        timeout=120,
    )
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.strip() and again.stderr.count(b'"event": "answered"') == 1
    assert pending_count(data / "hearthbot.db") == 0


def test_sighup_reloads_personas(
    env: dict[str, str], notify: Notifications, tmp_path: Path
) -> None:
    personas = Path(env["HEARTHBOT_BOT__PERSONAS_DIR"])
    (personas / "first.toml").write_text(PERSONA.format(name="first"))
    proc = start(env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    say = proc.stdin

    def ask(line: str) -> None:
        say.write(line.encode() + b"\n")
        say.flush()

    try:
        notify.wait_key("READY")
        ask("!persona second")
        out.wait_for("no persona called 'second'")
        (personas / "second.toml").write_text(PERSONA.format(name="second"))
        proc.send_signal(signal.SIGHUP)
        notify.wait_key("RELOADING", timeout=10)
        assert notify.wait_key("READY", timeout=10)["READY"] == "1"
        ask("!persona second")
        out.wait_for("Persona is now second")
        # A broken persona file changes nothing: the bot carries on with what it had.
        (personas / "broken.toml").write_text("temperature = 'hot'\n")
        proc.send_signal(signal.SIGHUP)
        notify.wait_key("RELOADING", timeout=10)
        notify.wait_key("READY", timeout=10)
        err.wait_for("reload failed")
        ask("!persona first")
        out.wait_for("Persona is now first")
        say.close()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert "Traceback" not in "".join(err.all)


def _deny_write_execute() -> None:
    # What systemd's MemoryDenyWriteExecute=yes enforces, via the kernel's own switch
    # (PR_SET_MDWE, Linux ≥ 6.3): inherited across fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_runs_with_memory_deny_write_execute(env: dict[str, str]) -> None:
    wx = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    probe = [sys.executable, "-c", f"import mmap; mmap.mmap(-1, 4096, prot={wx})"]
    assert subprocess.run(probe).returncode == 0
    # The kernel really refuses W+X memory in such a process: the switch works here.
    assert subprocess.run(probe, preexec_fn=_deny_write_execute, capture_output=True).returncode
    result = subprocess.run(
        CLI,
        input=b"hello there\n",
        capture_output=True,
        env={k: v for k, v in env.items() if k != "NOTIFY_SOCKET"},
        cwd=env["HOME"],
        timeout=120,
        preexec_fn=_deny_write_execute,
    )
    # llama.cpp, ctypes callbacks and SQLite all work without W+X memory.
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip() and b'"event": "answered"' in result.stderr
