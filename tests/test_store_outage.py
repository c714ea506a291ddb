"""A store that cannot be written (a full disk, a write lock held by another process) delays
answers but never silences the bot, and the health endpoints say so; only an answer worker
that is gone withholds the systemd watchdog. A real daemon (tiny GGUF, real SQLite, the
recording adapter), its health endpoints over HTTP, its service's notifications on a real
socket."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import texts
from bot.app.service import Service
from bot.app.systemd import Notifier
from bot.daemon import Daemon
from bot.events import Outcome
from support.daemons import DB, answered, ask, daemon_for, model_held
from support.health import get, served
from support.progress import until_progressing
from support.recording_adapter import RecordedReply, RecordingAdapter, message
from support.store_faults import fill_disk, free_disk, write_lock_held
from support.stored import message_count, pending_count

CHANNEL = "test:c1"


def delay_notices(record: RecordedReply) -> int:
    return sum(texts.DELAYED in update for update in record.updates)


async def delayed(daemon: Daemon, record: RecordedReply) -> None:
    """Until the reply shows that its answer is delayed (saving it failed)."""
    await until_progressing(
        lambda: delay_notices(record) > 0,
        lambda: (len(record.updates), daemon.store.problem),
        quiet_s=60,
        what="the delayed notice",
    )


async def answered_once_then_normally(
    daemon: Daemon, adapter: RecordingAdapter, record: RecordedReply, base: str, db: Path
) -> None:
    """The store works again: the delayed answer comes once, then all is as before."""
    final = await answered(record)  # a second answer would fail the recording adapter
    assert texts.DELAYED not in final and delay_notices(record) == 1
    assert pending_count(db) == 0 and message_count(db, CHANNEL) == 2  # question, answer
    assert await get(f"{base}/healthz") == (200, "ok\n")
    assert await get(f"{base}/readyz") == (200, "ready: test\n")
    await ask(daemon, adapter, "and now?")
    assert delay_notices(adapter.replies[-1]) == 0
    assert pending_count(db) == 0 and message_count(db, CHANNEL) == 4


async def test_a_full_disk_delays_the_answer_until_it_can_be_saved(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with served(tmp_path, tiny_model) as (daemon, adapter, service, base):
        first = message("hello there")
        async with model_held(daemon.backend):  # the answer is generated once the disk is full
            assert await daemon.handle(first) is Outcome.ACCEPTED
            await fill_disk(daemon.store._db)
        (record,) = adapter.for_message(first.message_id)
        await delayed(daemon, record)
        problem = "degraded: store (database or disk is full)"
        assert await get(f"{base}/healthz") == (200, f"{problem}\n")  # alive: no restart
        assert await get(f"{base}/readyz") == (503, f"not ready: {problem}\n")
        assert problem in service.status_text()
        assert pending_count(tmp_path / DB) == 1 and record.final is None
        await free_disk(daemon.store._db)
        await answered_once_then_normally(daemon, adapter, record, base, tmp_path / DB)


@pytest.mark.slow  # each try waits out SQLite's busy timeout (5 s)
async def test_a_write_lock_held_elsewhere_delays_the_answer_until_it_is_released(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with served(tmp_path, tiny_model) as (daemon, adapter, service, base):
        first = message("hello there")
        with contextlib.ExitStack() as lock:
            async with model_held(daemon.backend):  # generated once the lock is taken
                assert await daemon.handle(first) is Outcome.ACCEPTED
                lock.enter_context(write_lock_held(tmp_path / DB))
            (record,) = adapter.for_message(first.message_id)
            await delayed(daemon, record)
            problem = "degraded: store (database is locked)"
            assert await get(f"{base}/healthz") == (200, f"{problem}\n")
            assert await get(f"{base}/readyz") == (503, f"not ready: {problem}\n")
            assert problem in service.status_text()
            assert record.final is None
        await answered_once_then_normally(daemon, adapter, record, base, tmp_path / DB)


async def test_stopping_while_the_answer_is_delayed_keeps_it_pending(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        first = message("hello there")
        async with model_held(daemon.backend):
            assert await daemon.handle(first) is Outcome.ACCEPTED
            await fill_disk(daemon.store._db)
        (record,) = adapter.for_message(first.message_id)
        await delayed(daemon, record)
        await daemon.stop(grace=0)
        assert record.failed == texts.SHUTTING_DOWN and record.final is None
        assert pending_count(tmp_path / DB) == 1  # answered after the next start


@pytest.mark.parametrize("command", ["!reset", "!forget"])
async def test_reset_and_forget_end_a_stopped_answer_that_waits_for_the_store(
    tmp_path: Path, tiny_model: Path, command: str
) -> None:
    """!reset and !forget stop the answer being written in the channel (to the person) and
    wait for it to end. One whose saving failed went on retrying, so the command waited
    until the store took writes again (here: never). Now a stopped answer does not retry: it
    ends "(stopped)" unsaved, is no longer pending, and the command is answered at once."""
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        first = message("hello there")
        async with model_held(daemon.backend):
            assert await daemon.handle(first) is Outcome.ACCEPTED
            await fill_disk(daemon.store._db)
        (record,) = adapter.for_message(first.message_id)
        await delayed(daemon, record)
        said = message(command, admin=True)
        handled = asyncio.ensure_future(daemon.handle(said))
        await until_progressing(
            handled.done,
            lambda: (len(record.updates), record.done.is_set(), len(adapter.replies)),
            quiet_s=40,  # over the longest pause between two tries to save
            what="the command's answer",
        )
        assert handled.result() is Outcome.COMMAND
        assert record.failed == texts.CANCELLED and record.final is None
        (answer,) = adapter.for_message(said.message_id)
        assert answer.final is not None and answer.final.startswith(("Cleared", "Deleted"))
        assert pending_count(tmp_path / DB) == 0  # not answered again after a restart
        assert message_count(tmp_path / DB, CHANNEL) == 0


async def test_a_reply_that_raises_ends_its_answer_not_the_worker(
    tmp_path: Path, tiny_model: Path
) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        broken = message("hello there")
        adapter.broken.add(broken.message_id)
        assert await daemon.handle(broken) is Outcome.ACCEPTED
        await ask(daemon, adapter, "and now?")  # the worker is still there
        assert pending_count(tmp_path / DB) == 0  # the failed one is not retried forever


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """systemd's end of NOTIFY_SOCKET."""
    folder = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))  # socket paths: ≤ 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folder / "notify.sock"))
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


async def beat(service: Service, sock: socket.socket) -> dict[str, str]:
    """One heartbeat of the service: what it told systemd (a later line wins)."""
    await service.beat(watchdog=True)
    told: dict[str, str] = {}
    while True:
        try:
            raw = sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return told
        told.update(line.split("=", 1) for line in raw.decode().split("\n"))


async def test_the_watchdog_is_withheld_only_when_the_answer_worker_is_gone(
    tmp_path: Path, tiny_model: Path, notify_socket: socket.socket
) -> None:
    notifier = Notifier(notify_socket.getsockname())
    async with served(tmp_path, tiny_model, notifier=notifier) as (daemon, adapter, service, base):
        assert (await beat(service, notify_socket))["WATCHDOG"] == "1"
        # A full disk alone: answers wait, the service says so, and a restart would not help.
        await fill_disk(daemon.store._db)
        await daemon.handle(message("hello there"))  # cannot even be saved
        assert daemon.store.problem is not None
        told = await beat(service, notify_socket)
        assert told["WATCHDOG"] == "1" and "degraded: store" in told["STATUS"]
        await free_disk(daemon.store._db)
        # A platform that is down: nothing a restart would fix either.
        await adapter.stop()
        assert (await beat(service, notify_socket))["WATCHDOG"] == "1"
        # The answer worker is gone (nothing else ends it while the daemon runs).
        (worker,) = (t for t in asyncio.all_tasks() if t.get_name() == "hearthbot-worker")
        worker.cancel()
        await asyncio.wait([worker])
        told = await beat(service, notify_socket)
        assert "WATCHDOG" not in told and "answer worker stopped" in told["STATUS"]
        assert "WATCHDOG" not in await beat(service, notify_socket)
        status, text = await get(f"{base}/healthz")
        assert status == 503 and "answer worker stopped" in text
