"""adapters.common: the background tasks both platforms use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import adapters.common.tasks as tasks_module
from adapters.common.tasks import BackgroundTasks


class Errors:
    """Stands in for the module's logger (structlog may have cached the real one)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> Errors:
    recorder = Errors()
    monkeypatch.setattr(tasks_module, "log", recorder)
    return recorder


async def test_a_failed_task_is_logged_and_let_go(errors: Errors) -> None:
    tasks = BackgroundTasks("test")

    async def broken() -> None:
        raise RuntimeError("boom")

    task = tasks.spawn(broken(), "broken")
    assert task is not None and list(tasks) == [task]
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert len(tasks) == 0
    (line,) = errors.lines
    assert line["event"] == "background task failed"
    assert line["task"] == "broken" and line["adapter"] == "test"
    assert line["error"] == "RuntimeError: boom"


async def test_stop_gives_a_grace_then_cancels_and_refuses_new_work(errors: Errors) -> None:
    tasks = BackgroundTasks("test")
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    async def endless() -> None:
        await asyncio.sleep(3600)
        finished.append("endless")

    tasks.spawn(quick(), "quick")
    slow = tasks.spawn(endless(), "endless")
    await tasks.stop(grace_s=0.2)
    assert finished == ["quick"] and slow is not None and slow.cancelled()
    assert len(tasks) == 0 and errors.lines == []  # a cancelled task is no failure
    late = endless()
    assert tasks.spawn(late, "late") is None
    assert late.cr_frame is None  # closed, never to run (and no "never awaited" warning)
    tasks.open()
    again = tasks.spawn(quick(), "again")
    assert again is not None
    await again
