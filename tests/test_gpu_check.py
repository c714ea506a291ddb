"""Where the model runs, in `hearthbot check` and `!status`: the devices llama.cpp sees (bound
from libggml), the layers it offloaded, the VRAM fit; the real tiny model on this CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.app.check import diagnose
from bot.app.check.gpu import planned_layers, vram_bytes, vram_check
from bot.commands.info import runs_line
from bot.model.gguf import inspect_model
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.llama_cpp.devices import Device, devices
from bot.model.llama_cpp.placement import Attention
from bot.settings import ModelSettings, load_settings
from support.daemons import ask, daemon_for
from support.llama_server import free_port

GIB = 2**30
CARD = Device("CUDA0", "NVIDIA GeForce RTX 3060", "GPU", 10 * GIB, 12 * GIB)
CPU = Device("CPU", "Intel(R) Xeon(R)", "CPU", 20 * GIB, 24 * GIB)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HEARTHBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_llama_cpp_sees_this_cpu() -> None:
    found = devices()
    cpus = [d for d in found if d.kind == "CPU"]
    assert len(cpus) == 1 and cpus[0].name == "CPU" and not cpus[0].gpu
    assert 0 < cpus[0].free_bytes <= cpus[0].total_bytes
    with open("/proc/meminfo") as meminfo:  # ggml reads the machine's RAM
        total_kb = int(meminfo.readline().split()[1])
    assert cpus[0].total_bytes == pytest.approx(total_kb * 1024, rel=0.01)


async def test_check_lists_devices_layers_and_fit(tmp_path: Path, tiny_model: Path) -> None:
    settings = load_settings(
        bot={"data_dir": tmp_path / "data"},
        model={"path": tiny_model, "n_ctx": 1024, "n_threads": 2},
        health={"listen": f"127.0.0.1:{free_port()}"},
    )
    report = await diagnose(settings, None)
    lines = report.lines()
    devices_shown = [line for line in lines if line.startswith("✓ device: ")]
    assert len(devices_shown) == len(devices())
    assert any(line.startswith("✓ device: CPU — ") and "(CPU)" in line for line in devices_shown)
    assert "GiB free" in devices_shown[0]
    offload = next(line for line in lines if line.startswith("✓ offload: "))
    # The tiny model's 2 blocks and its output layer, all on the CPU (llama.cpp's log).
    assert offload.startswith("✓ offload: 0 of 3 layers on a GPU: llama.cpp here has no GPU")
    assert offload.endswith("runs on CPU, 2 threads")
    assert "✓ vram: nothing offloaded" in lines
    assert report.exit_code() == 0, lines


def test_planned_layers(tiny_model: Path) -> None:
    summary = inspect_model(tiny_model)  # 2 blocks: 3 layers to llama.cpp
    assert planned_layers(ModelSettings(), summary, [CPU]) == 0
    assert planned_layers(ModelSettings(), summary, [CARD, CPU]) == 3
    assert planned_layers(ModelSettings(n_gpu_layers=-1), summary, [CARD, CPU]) == 3
    assert planned_layers(ModelSettings(n_gpu_layers=1), summary, [CARD, CPU]) == 1
    assert planned_layers(ModelSettings(n_gpu_layers=99), summary, [CARD, CPU]) == 3


def test_vram_fit(tiny_model: Path) -> None:
    summary = inspect_model(tiny_model)
    model = ModelSettings(n_ctx=4096, parallel=4)
    whole = summary.size_bytes + summary.kv_bytes(4096 * 4)
    assert vram_bytes(summary, model, 0, 3) == 0
    assert vram_bytes(summary, model, 3, 3) == whole
    assert vram_bytes(summary, model, 1, 3) == whole // 3
    q8 = ModelSettings(n_ctx=4096, parallel=4, kv_type="q8_0")
    assert vram_bytes(summary, q8, 3, 3) < whole
    assert vram_check(0, [CPU]).detail == "nothing offloaded"
    assert vram_check(9 * GIB, [CARD, CPU]).ok
    too_big = vram_check(11 * GIB, [CARD, CPU])
    assert not too_big.ok and "11.0 GiB, 10.0 GiB free" in too_big.detail
    assert "n_gpu_layers" in too_big.detail


async def test_status_says_where_the_model_runs(tiny_model_heads32: Path) -> None:
    backend = await LlamaCppBackend.load(
        tiny_model_heads32, n_ctx=512, n_threads=2, parallel=1, attention=Attention("q8_0", "auto")
    )
    try:
        assert runs_line(backend.info) == "Runs on: CPU, 2 threads; KV cache q8_0"
        assert (backend.info.layers, backend.info.offloaded_layers) == (3, 0)
    finally:
        await backend.close()


async def test_the_status_command_says_it(tmp_path: Path, tiny_model: Path) -> None:
    async with daemon_for(tmp_path, tiny_model) as (daemon, adapter):
        status = await ask(daemon, adapter, "!status")
    assert "\nRuns on: CPU, " in status and " threads; KV cache f16\n" in status
