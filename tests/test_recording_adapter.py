"""The in-memory adapter the daemon tests use (tests/support/recording_adapter.py) keeps the
Adapter protocol's promises where a test relies on them."""

from __future__ import annotations

import asyncio

from support.recording_adapter import RecordingAdapter


async def test_failure_is_one_future_that_resolves() -> None:
    adapter = RecordingAdapter()
    waiting = asyncio.ensure_future(adapter.failure)  # as bot.app.cli waits on it
    assert adapter.failure is adapter.failure and not waiting.done()
    adapter.failure.set_result("bad token")
    assert await asyncio.wait_for(waiting, 5) == "bad token"
