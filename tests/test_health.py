"""/healthz, /readyz and /metrics over real HTTP on 127.0.0.1 (an ephemeral port), served
for a real daemon (tiny GGUF, SQLite, the recording adapter)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app.bootstrap import checked_personas
from bot.app.health import HealthError, HealthServer
from bot.app.liveness import WorkerProbe
from bot.app.metrics import Metrics
from bot.app.service import Service
from bot.app.systemd import Notifier
from bot.model.types import EngineStats
from bot.settings import ConfigError, load_settings
from bot.status import DaemonStatus
from support.daemons import answered, daemon_for, model_held
from support.health import LOCAL, get, served
from support.recording_adapter import message


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_health_ready_and_metrics(tmp_path: Path, tiny_model: Path) -> None:
    async with served(tmp_path, tiny_model, queue={"per_user_per_minute": 1}) as (
        daemon,
        adapter,
        _service,
        base,
    ):
        assert await get(f"{base}/healthz") == (200, "ok\n")
        assert await get(f"{base}/readyz") == (200, "ready: test\n")
        first = message("hello there", author="a")
        await daemon.handle(first)
        await answered(adapter.for_message(first.message_id)[0])
        await daemon.handle(message("again", author="a"))  # over a's rate limit: refused
        await daemon.wait_idle()

        status, text = await get(f"{base}/metrics")
        assert status == 200
        got = samples(text)
        names = {name for name, _ in got}
        assert all(name.startswith("hearthbot_") for name in names)
        test = (("platform", "test"),)
        assert got[("hearthbot_messages_answered_total", test)] == 1
        refused = (("platform", "test"), ("reason", "rate_limited"))
        assert got[("hearthbot_messages_refused_total", refused)] == 1
        assert got[("hearthbot_messages_refused_total", (*test[:1], ("reason", "busy")))] == 0
        assert got[("hearthbot_tokens_generated_total", ())] >= 1
        assert got[("hearthbot_energy_joules_total", (("source", "estimated"),))] > 0
        assert got[("hearthbot_prompt_tokens_evaluated_total", ())] >= 1
        assert ("hearthbot_prompt_tokens_reused_total", ()) in got
        assert got[("hearthbot_time_to_first_token_seconds_count", ())] == 1
        assert ("hearthbot_tokens_per_second_count", ()) in got
        assert got[("hearthbot_queue_depth", ())] == 0
        assert got[("hearthbot_generating", ())] == 0
        assert got[("hearthbot_slots", ())] == daemon.backend.slots
        assert got[("hearthbot_adapter_connected", test)] == 1
        assert got[("hearthbot_errors_total", (("kind", "answer"),))] == 0

        await adapter.stop()  # the platform connection drops
        status, text = await get(f"{base}/readyz")
        assert status == 503 and "test not connected" in text
        after = samples((await get(f"{base}/metrics"))[1])
        assert after[("hearthbot_adapter_connected", test)] == 0
        assert (await get(f"{base}/healthz"))[0] == 200  # alive, just not ready


async def test_healthz_fails_while_the_worker_is_stuck(tmp_path: Path, tiny_model: Path) -> None:
    async with served(tmp_path, tiny_model, health={"listen": LOCAL, "stall_s": 0.3}) as (
        daemon,
        _adapter,
        _service,
        base,
    ):
        async with model_held(daemon.backend):
            status, text = await get(f"{base}/healthz")
            assert status == 503 and "model worker has not answered" in text
        assert await get(f"{base}/healthz") == (200, "ok\n")


async def test_a_taken_port_is_logged_and_the_bot_runs_on(tmp_path: Path, tiny_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        async with daemon_for(tmp_path, tiny_model, health={"listen": listen}) as (daemon, _):
            server = HealthServer(listen, daemon.status, WorkerProbe(None, lambda: (), 1), None)
            with pytest.raises(HealthError, match=f"cannot listen on {listen}"):
                await server.start()
            service = Service(daemon.settings, None, checked_personas, notifier=Notifier(None))
            await service.attach(daemon, serve_health=True)
            assert service.health is None and daemon.observer is not None
            await service.close()


async def test_console_and_empty_listen_serve_nothing(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model, health={"listen": ""}) as (daemon, _adapter):
        service = Service(daemon.settings, None, checked_personas, notifier=Notifier(None))
        await service.attach(daemon, serve_health=True)
        assert service.health is None
        await service.close()


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        ("127.0.0.1:9470", True),
        ("[::1]:9470", True),
        ("localhost:0", True),
        ("", True),
        ("9470", False),
        ("127.0.0.1:http", False),
        ("127.0.0.1:70000", False),
    ],
)
def test_listen_setting(listen: str, ok: bool) -> None:
    if ok:
        assert load_settings(None, health={"listen": listen}).health.listen == listen
    else:
        with pytest.raises(ConfigError, match=r"health\.listen"):
            load_settings(None, health={"listen": listen})


@dataclass
class FakeResult:
    generated_tokens: int = 0


@dataclass
class FakeGeneration:
    result: FakeResult = field(default_factory=FakeResult)


async def test_probe_counts_a_progressing_answer_as_alive() -> None:
    never: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    running = FakeGeneration()
    current: list[FakeGeneration] = [running]
    probe = WorkerProbe(lambda: never, lambda: current, stall_s=0.1)  # type: ignore[arg-type,return-value]
    assert await probe.check() is None  # the ping was just sent
    await asyncio.sleep(0.15)
    assert await probe.check() is None  # no answer yet, but a new answer is on its way
    running.result.generated_tokens += 5
    await asyncio.sleep(0.15)
    assert await probe.check() is None  # tokens moved since the last look
    await asyncio.sleep(0.15)
    assert "not answered" in (await probe.check() or "")  # stuck mid-answer
    current.clear()
    assert "not answered" in (await probe.check() or "")
    probe.close()


async def test_probe_counts_any_of_several_answers_moving_as_alive() -> None:
    """Several answers in flight (issue 14): the worker is alive while any of them moves,
    also when the others wait their turn."""
    never: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    moving, waiting = FakeGeneration(), FakeGeneration()
    probe = WorkerProbe(lambda: never, lambda: [waiting, moving], stall_s=0.1)  # type: ignore[arg-type,return-value]
    assert await probe.check() is None
    for _ in range(3):
        await asyncio.sleep(0.15)
        moving.result.generated_tokens += 1
        assert await probe.check() is None  # only one of them moves, and that is enough
    await asyncio.sleep(0.15)
    assert "not answered" in (await probe.check() or "")  # none has moved
    probe.close()


def test_metrics_show_slots_and_what_the_engine_says() -> None:
    def status(engine: EngineStats | None) -> DaemonStatus:
        return DaemonStatus(
            queued=5, answering=3, slots=4, answered=9, stopping=False, adapters={}, engine=engine
        )

    with_engine = samples(
        Metrics(lambda: status(EngineStats(3, batch_size=3, tokens_per_s=42.5)))
        .exposition()
        .decode()
    )
    assert {name: value for (name, _), value in with_engine.items() if "_engine_" in name} == {
        "hearthbot_engine_slots_busy": 3,
        "hearthbot_engine_batch_size": 3,
        "hearthbot_engine_tokens_per_second": 42.5,
    }
    assert with_engine[("hearthbot_generating", ())] == 3
    assert with_engine[("hearthbot_slots", ())] == 4
    assert with_engine[("hearthbot_queue_depth", ())] == 5
    without = samples(Metrics(lambda: status(None)).exposition().decode())
    assert not [name for name, _ in without if "_engine_" in name]  # nothing made up
