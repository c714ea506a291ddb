"""Graceful shutdown and live reload, in process with the real engine and SQLite: the answer
in flight finishes within the grace period or ends with a notice; nothing queued is lost;
SIGHUP's reload swaps personas and access lists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bot import texts
from bot.app.bootstrap import checked_personas
from bot.app.service import Service, changed_fields
from bot.app.systemd import Notifier
from bot.daemon import Daemon
from bot.events import Incoming, Outcome
from bot.personas import load_personas
from bot.settings import BotSettings, load_settings
from bot.store import Store
from support.daemons import answered, daemon_for
from support.recording_adapter import RecordedReply, RecordingAdapter, message

PERSONA = """description = "{name}"
temperature = 0.0
max_tokens = {max_tokens}
system_prompt = "You are a test."
"""


def persona_dir(tmp_path: Path, **max_tokens: int) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    for name, limit in max_tokens.items():
        (folder / f"{name}.toml").write_text(PERSONA.format(name=name, max_tokens=limit))
    return folder


async def first_text(record: RecordedReply) -> None:
    async with asyncio.timeout(20):
        while not record.updates:  # noqa: ASYNC110 (waiting for the first streamed text)
            await asyncio.sleep(0.005)


class StopLog(RecordingAdapter):
    """Records when it was disconnected, relative to the replies it showed."""

    def __init__(self) -> None:
        super().__init__()
        self.done_at_stop: list[bool] = []

    async def stop(self) -> None:
        self.done_at_stop.append(all(r.done.is_set() for r in self.replies))
        await super().stop()


async def test_the_answer_in_flight_finishes_within_the_grace_period(
    tmp_path: Path, tiny_model: Path
) -> None:
    bot = {"personas_dir": persona_dir(tmp_path, medium=1000), "default_persona": "medium"}
    async with daemon_for(tmp_path, tiny_model, start=False, bot=bot) as (daemon, _):
        adapter = StopLog()
        daemon.adapters = {"test": adapter}  # type: ignore[dict-item]
        await daemon.start()
        msg = message("tell me a long story")
        await daemon.handle(msg)
        (record,) = adapter.for_message(msg.message_id)
        await first_text(record)
        assert daemon.in_flight
        await daemon.stop(grace=60)
        assert record.final is not None and record.failed is None
        assert len(record.final) > len(record.updates[0])
        assert adapter.done_at_stop == [True]  # disconnected only after the final edit
        assert await daemon.store.pending() == []


async def test_after_the_grace_period_a_notice_and_the_message_stays_pending(
    tmp_path: Path, tiny_model: Path
) -> None:
    bot = {"personas_dir": persona_dir(tmp_path, long=8000), "default_persona": "long"}
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, bot=bot) as (daemon, adapter):
        msgs = [message(f"go on forever {i}", channel=f"c{i}") for i in range(3)]
        for msg in msgs:
            assert await daemon.handle(msg) is Outcome.ACCEPTED
        (record,) = adapter.for_message(msgs[0].message_id)
        await first_text(record)
        started = time.monotonic()
        await daemon.stop(grace=0.2)
        assert time.monotonic() - started < 5  # far less than 8,000 tokens take
        assert record.updates and record.failed == texts.SHUTTING_DOWN
        # The two queued were never started; all three are answered after a restart.
        assert [r.message.message_id for r in adapter.replies if r.done.is_set()] == [
            msgs[0].message_id
        ]
        pending = [p.message.message_id for p in await daemon.store.pending()]
        assert sorted(pending) == sorted(m.message_id for m in msgs)
        # A message that arrives while stopping is not answered, but not lost either.
        late = message("are you there?", channel="c9")
        assert await daemon.handle(late) is Outcome.DEFERRED
        assert late.message_id in [p.message.message_id for p in await daemon.store.pending()]
        assert not adapter.for_message(late.message_id)
        # A command then is not kept (commands never are): its sender is told to try again.
        status = message("!status", channel="c9")
        assert await daemon.handle(status) is Outcome.COMMAND
        (told,) = adapter.for_message(status.message_id)
        assert told.final == texts.TRY_AGAIN


async def test_a_second_signal_skips_the_grace_period(tmp_path: Path, tiny_model: Path) -> None:
    bot = {"personas_dir": persona_dir(tmp_path, long=8000), "default_persona": "long"}
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, bot=bot) as (daemon, adapter):
        msg = message("go on forever")
        await daemon.handle(msg)
        (record,) = adapter.for_message(msg.message_id)
        await first_text(record)
        stopping = asyncio.create_task(daemon.stop(grace=600))
        await asyncio.sleep(0.1)
        assert not stopping.done()  # waiting for the answer
        daemon.abandon()  # what a second SIGTERM/SIGINT does
        await asyncio.wait_for(stopping, 5)
        assert record.failed == texts.SHUTTING_DOWN


async def test_stop_while_idle_is_quick(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model, bot={"shutdown_grace_s": 600}) as (daemon, adapter):
        await answered(await _ask(daemon, adapter, "hi"))
        started = time.monotonic()
        await daemon.stop()
        assert time.monotonic() - started < 2


async def _ask(daemon: Daemon, adapter: RecordingAdapter, text: str) -> RecordedReply:
    msg = message(text)
    await daemon.handle(msg)
    return adapter.for_message(msg.message_id)[0]


class Reloadable(RecordingAdapter):
    """An adapter that offers the optional `update_settings` hook."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[Any] = []

    async def update_settings(self, section: BaseModel, bot: BotSettings) -> None:
        self.sections.append(section)
        self.bot = bot


async def test_reload_swaps_personas_and_access_lists(tmp_path: Path, tiny_model: Path) -> None:
    personas = persona_dir(tmp_path, first=64)
    config = tmp_path / "hearthbot.toml"
    config.write_text(
        f'[bot]\ndata_dir = "{tmp_path}"\npersonas_dir = "{personas}"\n'
        "[discord]\nadmins = [1]\n[queue]\nmax_pending = 64\n"
    )
    settings = load_settings(config)
    store = await Store.open(tmp_path / "reload.db")
    async with daemon_for(tmp_path, tiny_model, start=False) as (base, _):
        adapter = Reloadable()
        daemon = Daemon(settings, store, base.backend, load_personas(personas), {})
        daemon.adapters = {"discord": adapter}  # type: ignore[dict-item]
        service = Service(settings, config, checked_personas, notifier=Notifier(None))
        service.daemon = daemon
        assert daemon.personas.get("second") is None

        persona_dir(tmp_path, second=64)
        config.write_text(
            f'[bot]\ndata_dir = "{tmp_path}"\npersonas_dir = "{personas}"\n'
            'admins = ["discord:42"]\ndefault_persona = "second"\n'
            "[discord]\nadmins = [1, 2]\n[queue]\nmax_pending = 8\n"
        )
        assert await service.reload()
        assert daemon.personas.get("second") is not None
        assert daemon.settings.bot.default_persona == "second"
        assert daemon.is_admin(_from_discord("42")) and not daemon.is_admin(_from_discord("1"))
        assert [s.admins for s in adapter.sections] == [[1, 2]]
        assert adapter.bot.admins == ["discord:42"]  # the live [bot] settings come along
        assert daemon.settings.queue.max_pending == 64  # needs a restart: unchanged

        # A broken config changes nothing.
        config.write_text("[bot]\ndefault_persona = 'nobody'\n")
        assert not await service.reload()
        assert daemon.settings.bot.default_persona == "second"
        await service.close()
    await store.close()


def _from_discord(author: str) -> Incoming:
    return Incoming("discord", "c", "m", author_id=author, author_name="A", text="x")


def test_changed_fields_names_what_needs_a_restart(tmp_path: Path) -> None:
    old = load_settings(None, bot={"data_dir": tmp_path})
    new = load_settings(
        None,
        bot={"data_dir": tmp_path, "admins": ["x:1"], "shutdown_grace_s": 3},
        queue={"max_pending": 3},
        discord={"admins": [5]},
    )
    assert changed_fields(old, new, skip=set()) == [
        "bot.shutdown_grace_s",
        "queue.max_pending",
        "discord.admins",
    ]
    assert changed_fields(old, new, skip={"discord"}) == [
        "bot.shutdown_grace_s",
        "queue.max_pending",
    ]
