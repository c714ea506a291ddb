"""Waits that give up when a run stops getting anywhere, not when a clock runs out: on two
cores shared with other work a long run is slow, and a fixed budget for all of it fails a
healthy run. Each wait watches something that changes while the run is healthy (answers
given, output written) and fails once it has not changed for `quiet_s` seconds."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
POLL_S = 0.05


class Stall:
    """A deadline that moves on whenever the watched value changes."""

    def __init__(self, quiet_s: float, value: object, now: float) -> None:
        self.quiet_s = quiet_s
        self.value = value
        self.changed_at = now

    def stalled(self, value: object, now: float) -> bool:
        """Whether `value` has been the same for more than quiet_s seconds, as of `now`."""
        if value != self.value:
            self.value, self.changed_at = value, now
        return now - self.changed_at > self.quiet_s


async def until_progressing(
    condition: Callable[[], object], progress: Callable[[], object], quiet_s: float, what: str
) -> None:
    """Poll until `condition()` holds, while `progress()` keeps changing."""
    stall = Stall(quiet_s, progress(), time.monotonic())
    while not condition():
        if stall.stalled(progress(), time.monotonic()):
            raise AssertionError(f"no progress in {quiet_s} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def wait_progressing(
    done: Awaitable[T], progress: Callable[[], object], quiet_s: float, what: str
) -> T:
    """`done`'s result, however long it takes while `progress()` keeps changing."""
    task = asyncio.ensure_future(done)
    try:
        await until_progressing(task.done, progress, quiet_s, what)
        return task.result()
    finally:
        task.cancel()


def file_sizes(*paths: Path) -> tuple[int, ...]:
    """How much has been written to each file so far (0 while it does not exist)."""
    return tuple(path.stat().st_size if path.exists() else 0 for path in paths)


def run_progressing(
    command: Sequence[str | Path],
    *,
    quiet_s: float,
    input: str | bytes = b"",
    text: bool = False,
    progress: Callable[[], object] = lambda: None,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(command, input=..., capture_output=True): killed, and the test failed,
    once neither its output nor `progress()` has changed for quiet_s seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        stdin, stdout, stderr = (Path(tmp) / name for name in ("stdin", "stdout", "stderr"))
        stdin.write_bytes(input.encode() if isinstance(input, str) else input)
        with stdin.open("rb") as i, stdout.open("wb") as o, stderr.open("wb") as e:
            proc = subprocess.Popen(command, stdin=i, stdout=o, stderr=e, **popen)

        def watched() -> object:
            return stdout.stat().st_size, stderr.stat().st_size, progress()

        stall = Stall(quiet_s, watched(), time.monotonic())
        while proc.poll() is None:
            if stall.stalled(watched(), time.monotonic()):
                proc.kill()
                proc.wait()
                raise AssertionError(
                    f"no progress in {quiet_s} s from {command}:\n"
                    + stderr.read_text(errors="replace")[-3000:]
                )
            time.sleep(POLL_S)
        out, err = stdout.read_bytes(), stderr.read_bytes()
    if text:
        return subprocess.CompletedProcess(command, proc.returncode, out.decode(), err.decode())
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
