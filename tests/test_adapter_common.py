"""adapters.common: the retry backoff, the background tasks and the recent messages both
platforms use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import adapters.common.tasks as tasks_module
from adapters.common.recent import RecentMessages
from adapters.common.tasks import BackgroundTasks
from bot.events import Quoted


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


# -- RecentMessages: what an adapter keeps for the core's reply quotes ---------------------------


def test_recent_messages_stay_within_their_bounds() -> None:
    recent = RecentMessages(max_messages=3, max_chars=10)
    for i in range(5):
        recent.saw(f"m{i}", Quoted("a", "A", "x"))
    assert len(recent) == 3 and "m1" not in recent and "m4" in recent
    recent.saw("long", Quoted("a", "A", "y" * 9))  # characters count too: older ones go
    assert len(recent) == 2 and recent.chars == 10
    recent.saw("huge", Quoted("a", "A", "z" * 11))  # over the bound alone: not kept at all
    assert len(recent) == 0 and recent.chars == 0


def test_recent_messages_follow_deletions_edits_and_forget() -> None:
    recent = RecentMessages()
    recent.saw("m1", Quoted("alice", "Alice", "my PIN is 4417"))
    recent.saw("m2", Quoted("alice", "Alice", "hello"))
    recent.saw("m3", Quoted("bob", "Bob", "hi"))
    recent.edited("m2", "mallory", "forged")  # only its author's edit counts
    assert recent.get("m2") == Quoted("alice", "Alice", "hello")
    recent.edited("m2", "alice", "hello again")
    assert recent.get("m2") == Quoted("alice", "Alice", "hello again")
    recent.deleted("m1")  # known gone: not read back from the platform either
    assert "m1" in recent and recent.get("m1") is None
    recent.deleted("m9")  # never seen: nothing to keep (the platform knows it is gone)
    assert "m9" not in recent
    recent.forget_author("alice", before=100.0)  # m2's time is not known: forgotten
    assert "m2" in recent and recent.get("m2") is None  # kept as gone: not read again
    assert recent.get("m3") == Quoted("bob", "Bob", "hi")
    assert recent.chars == len("hi")


def test_recent_messages_keep_nothing_an_author_wrote_before_their_forget() -> None:
    recent = RecentMessages()
    recent.saw("old", Quoted("alice", "Alice", "before", sent_at=90.0))
    recent.saw("new", Quoted("alice", "Alice", "after", sent_at=110.0))
    recent.forget_author("alice", before=100.0)
    assert recent.get("old") is None and recent.get("new") is not None
    # Read again later (from the platform, which still has it): still gone.
    recent.saw("old", Quoted("alice", "Alice", "before", sent_at=90.0))
    recent.saw("older", Quoted("alice", "Alice", "long before", sent_at=10.0))
    assert "old" in recent and recent.get("old") is None and recent.get("older") is None
    recent.saw("later", Quoted("alice", "Alice", "later", sent_at=120.0))
    assert recent.get("later") == Quoted("alice", "Alice", "later", sent_at=120.0)
    assert recent.chars == len("after") + len("later")
