"""hearthbot as a user runs it: `python -m bot.app.cli run` in its own process (under strace when
a test wants its connect() calls), configured by environment variables, its output in a log
file. For tests that kill it, restart it or watch what it does on the wire."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from support.fake_discord import until

WAIT_S = 120  # per step: two shared cores, and strace slows every syscall


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


def settings_env(section: str, values: Mapping[str, Any]) -> dict[str, str]:
    """A config section as the environment variables hearthbot reads (lists as JSON)."""
    return {
        f"HEARTHBOT_{section.upper()}__{key.upper()}": json.dumps(value)
        if isinstance(value, list)
        else str(value)
        for key, value in values.items()
    }


class LoggedProcess:
    """A process whose output goes to a log file: read it, count its log events, and wait
    for a condition while it runs (an exit meanwhile fails the wait, with the log's tail)."""

    log: Path
    proc: subprocess.Popen[bytes]
    what = "the bot"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def logged(self, event: str) -> int:
        return self.output().count(f'"event": "{event}"')

    async def until(self, condition: Callable[[], object], what: str) -> None:
        def check() -> bool:
            if self.proc.poll() is not None:
                tail = self.output()[-3000:]
                raise AssertionError(f"{self.what} exited waiting for {what}:\n{tail}")
            return bool(condition())

        await until(check, WAIT_S, what)


class BotProcess(LoggedProcess):
    """`hearthbot run` with data in OUT/data and output in OUT/<log_name>. As a context
    manager: stopped by SIGTERM on the way out (unless already gone), its exit code then in
    `returncode`."""

    def __init__(
        self,
        out: Path,
        model: Path,
        *,
        trace: Path | None = None,
        log_name: str = "bot.log",
        **settings: str,
    ) -> None:
        self.log = out / log_name
        env = chat_env(
            out,
            model,
            HEARTHBOT_HEALTH__LISTEN="",  # off: the bot's only sockets are the platform's
            HEARTHBOT_MODEL__N_THREADS="1",  # llama.cpp's threads spin; the cores are shared
            **settings,
        )
        command = [sys.executable, "-m", "bot.app.cli", "run"]
        self.traced = trace is not None
        if trace is not None:
            command = traced(trace, *command)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, env=env, cwd=out, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.returncode: int | None = None

    def _signal(self, signum: int) -> None:
        # strace ignores fatal signals when it logs to a file: signal the bot, its child.
        pid = self.proc.pid
        if self.traced:
            pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        os.kill(pid, signum)

    async def _exited(self) -> None:
        await until(lambda: self.proc.poll() is not None, 60, "the bot to exit")
        self.returncode = self.proc.returncode

    async def kill(self) -> None:
        """kill -9: no goodbyes, no flush, no last transaction."""
        self._signal(signal.SIGKILL)
        await self._exited()

    async def stop(self) -> None:
        """SIGTERM, as systemd stops it. Awaited, so servers in this loop serve its goodbyes."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        await self._exited()

    async def __aenter__(self) -> BotProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
        finally:
            if self.proc.poll() is None:  # it hung: leave nothing running
                self.proc.kill()
                self.proc.wait()
