"""What replies cost (bot.usage, bot.commands.usage): the wording by tables, the totals in the
store (per channel and local day, kept through purges, !reset and !forget), and !usage and
!status through the console with the real daemon and model."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from bot.commands.usage import cost_and_co2, energy_kind, energy_text, last_reply_line, totals_text
from bot.daemon import Daemon
from bot.migrations import MIGRATIONS
from bot.model.energy import Estimate
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.settings import FootprintSettings, load_settings
from bot.store import Store
from bot.usage import ReplyUsage, Totals, local_day, usage_totals
from support.progress import wait_progressing
from support.recording_adapter import message

QUIET_S = 120


def footprint(**values: object) -> FootprintSettings:
    return FootprintSettings.model_validate(values)


@pytest.mark.parametrize(
    ("joules", "text"),
    [
        (0.0, "0.0000 Wh"),
        (3.6, "0.0010 Wh"),
        (360.0, "0.100 Wh"),
        (3600.0, "1.00 Wh"),
        (36_000.0, "10.0 Wh"),
        (3_600_000.0, "1.00 kWh"),
        (7_380_000_000.0, "2,050.00 kWh"),
    ],
)
def test_energy_text(joules: float, text: str) -> None:
    assert energy_text(joules) == text


@pytest.mark.parametrize(
    ("joules", "estimated", "kind"),
    [(10.0, 0.0, "measured"), (10.0, 10.0, "estimated"), (10.0, 4.0, "partly estimated")],
)
def test_energy_kind(joules: float, estimated: float, kind: str) -> None:
    assert energy_kind(joules, estimated) == kind


@pytest.mark.parametrize(
    ("settings", "parts"),
    [
        ({}, []),
        ({"price_per_kwh": 0.30, "currency": "EUR"}, ["cost 0.6000 EUR"]),
        ({"price_per_kwh": 0.30}, ["cost 0.6000"]),
        ({"grams_co2_per_kwh": 400}, ["800.0 g CO₂"]),
        ({"grams_co2_per_kwh": 600, "price_per_kwh": 0}, ["cost 0.0000", "1.20 kg CO₂"]),
    ],
)
def test_cost_and_co2_of_two_kwh(settings: dict[str, object], parts: list[str]) -> None:
    assert cost_and_co2(7_200_000.0, footprint(**settings)) == parts


def test_totals_text() -> None:
    plain = footprint()
    assert totals_text(Totals(), plain) == "no replies"
    one = Totals(1, 120, 300, 40, 1.5, 36.0, 36.0, 0)
    assert totals_text(one, plain) == (
        "1 reply, 40 tokens generated (120 prompt tokens read, 300 reused), 0.0100 Wh estimated"
    )
    remote = Totals(2, 10, 0, 20, 0.0, 0.0, 0.0, 2)
    assert totals_text(remote, plain).endswith("energy not measured (a remote model server)")
    priced = Totals(3, 0, 0, 9, 0.0, 3_600_000.0, 0.0, 0)
    assert totals_text(priced, footprint(price_per_kwh=0.5, grams_co2_per_kwh=100)) == (
        "3 replies, 9 tokens generated (0 prompt tokens read, 0 reused), 1.00 kWh measured, "
        "cost 0.5000, 100.0 g CO₂"
    )


def test_last_reply_line() -> None:
    assert last_reply_line(None) == "Last reply here: none since the start"
    usage = ReplyUsage(200, 1000, 64, 2.25, 720.0, True)
    assert last_reply_line(usage) == (
        "Last reply here: 200 prompt tokens read, 1,000 reused, 64 generated, 2.2 s on the "
        "model, 0.200 Wh estimated"
    )
    assert "measured" in last_reply_line(ReplyUsage(1, 0, 1, 0.1, 3600.0, False))
    assert "not measured" in last_reply_line(ReplyUsage(1, 0, 1, 0.0, None))


@pytest.fixture
def in_zone() -> Iterator[None]:
    before = os.environ.get("TZ")
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize(
    ("zone", "day"),
    [("UTC", "2026-12-01"), ("America/New_York", "2026-11-30"), ("Asia/Tokyo", "2026-12-01")],
)
def test_a_day_is_the_boxs_local_date(in_zone: None, zone: str, day: str) -> None:
    os.environ["TZ"] = zone
    time.tzset()
    assert local_day(1_796_088_600) == day  # 2026-12-01 01:30 UTC


async def accepted(store: Store, channel: str, text: str, author: str = "u1") -> int:
    incoming = message(text, author=author, channel=channel)
    row = await store.accept(incoming, text)
    assert row is not None
    return row


async def test_totals_per_channel_and_day_survive_purge_reset_and_forget(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    try:
        with_energy = ReplyUsage(100, 20, 30, 1.0, 72.0, estimated=True)
        remote = ReplyUsage(10, 0, 5, 0.0, None)
        a1 = await accepted(store, "a", "first")
        assert await store.complete(a1, "test:a", "answer one", with_energy)
        a2 = await accepted(store, "a", "second", author="u2")
        assert await store.complete(a2, "test:a", "", remote)  # an empty answer counts too
        b1 = await accepted(store, "b", "third")
        assert await store.complete(b1, "test:b", "answer", with_energy)
        assert not await store.complete(b1, "test:b", "again", with_energy)  # not twice
        today = local_day()
        here = await usage_totals(store, "test:a", today)
        assert here == Totals(2, 110, 20, 35, 1.0, 72.0, 72.0, 1)
        assert await usage_totals(store, "test:a", None) == here
        assert await usage_totals(store, "test:a", "1999-01-01") == Totals()
        everywhere = await usage_totals(store, None, None)
        assert everywhere.replies == 3 and everywhere.joules == pytest.approx(144.0)
        # No text and no user in it: deleting history leaves it.
        await store.forget_user("test:u2")
        await store.reset_channel("test:a")
        await store.purge(before=time.time() + 10)
        assert await store.history("test:b") == []
        assert await usage_totals(store, None, None) == everywhere
    finally:
        await store.close()
    assert len(MIGRATIONS) >= 5


async def test_usage_and_status_through_the_console(tmp_path: Path, tiny_model: Path) -> None:
    stdin = io.StringIO("hello there\n!usage\n!status\n")
    stdout = io.StringIO()
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path},
        footprint={"price_per_kwh": 0.25, "currency": "EUR", "grams_co2_per_kwh": 300},
    )
    engine = await LlamaCppBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, energy=Estimate(settings.footprint.watts_per_core)
    )
    store = await Store.open(tmp_path / "db.sqlite")
    console = ConsoleAdapter(stdin, stdout, interactive=False)
    daemon = Daemon(settings, store, engine, load_personas(), {"console": console})  # type: ignore[dict-item]
    try:
        await daemon.start()

        def progress() -> int:
            return len(stdout.getvalue())

        await wait_progressing(console.finished.wait(), progress, QUIET_S, "the commands")
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
    out = stdout.getvalue()
    usage = out[out.index("Here, today:") :]
    lines = usage.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "Here, today",
        "Here, all time",
        "Whole bot, today",
        "Whole bot, all time",
    ]
    for line in lines[:4]:
        assert line.split(": ", 1)[1].startswith("1 reply, ")
        assert " Wh estimated, cost " in line and " EUR, " in line and " g CO₂" in line
    assert "Last reply here: " in out and " generated, " in out
    last = next(line for line in out.splitlines() if line.startswith("Last reply here: "))
    assert last.endswith("Wh estimated") and "s on the model" in last
