"""What a running test process costs: its memory, and how long its event loop was held up."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

TICK_S = 0.01


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def live_rss_mb() -> float:
    """RSS once garbage is collected and malloc has handed its free pages back: what is held,
    not what earlier tests in this process freed and left in malloc's arenas."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    return rss_mb()


def waited_for_cpu_s() -> float:
    """How long the calling thread has been ready to run but waiting for a core (Linux
    schedstat; 0 where the kernel does not keep it)."""
    try:
        fields = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text()
    except OSError:
        return 0.0
    return int(fields.split()[1]) / 1e9


def stolen_s() -> list[float]:
    """Per core, how long the hypervisor has run something else while this VM's core was
    meant to run (/proc/stat's steal; [] where there is none). A thread on a stolen core
    looks busy to its own kernel."""
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        lines = Path("/proc/stat").read_text().splitlines()
        cores = [line.split() for line in lines if line.startswith("cpu") and line[3] != " "]
        return [int(fields[8]) / tick for fields in cores if len(fields) > 8]
    return []


def stolen_since(before: list[float]) -> float:
    """The most stolen from any one core since `before` (the loop's thread was on one)."""
    return max((now - then for now, then in zip(stolen_s(), before, strict=False)), default=0.0)


@contextlib.contextmanager
def earlier_objects_frozen() -> Iterator[None]:
    """The objects of everything that ran before (earlier tests, in one pytest process) kept
    out of the cyclic collector's full passes while a daemon's loop is measured: after a few
    test files a gen-2 pass over them took 114 ms here, and the loop holds still for it. The
    daemon's own objects, made inside, are collected and scanned as ever."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class LoopLag:
    """A ticker task: the longest the event loop was held up between two ticks.

    A tick is late when the loop was busy (its own work, a blocking call, a thread holding the
    GIL), when other processes had the shared cores and when the hypervisor gave this VM's core
    to another VM; only the first is the loop's doing, so the time the loop's thread waited for
    a core (the kernel counts it) and the time stolen from a core (steal) are not lag."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _tick(self) -> None:
        while True:
            wall, waited, stolen = time.monotonic(), waited_for_cpu_s(), stolen_s()
            await asyncio.sleep(TICK_S)
            late = time.monotonic() - wall - TICK_S
            late -= waited_for_cpu_s() - waited + stolen_since(stolen)
            self.worst = max(self.worst, late)
            self.ticks += 1
