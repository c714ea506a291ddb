"""Checks of where the in-process model runs: the devices llama.cpp sees, the layers it
offloaded, and whether the offloaded share of weights and KV pool fits the GPUs' free memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.app.check.report import Check, Report
from bot.model.gguf import GgufSummary
from bot.model.types import ModelInfo
from bot.settings import ModelSettings

if TYPE_CHECKING:
    from bot.model.llama_cpp.devices import Device

GIB = 2**30


def device_checks(report: Report) -> list[Device]:
    """One line per device llama.cpp sees (name, what it is, free and total memory)."""
    from bot.model.llama_cpp.devices import devices

    found = devices()
    for device in found:
        report.checks.append(
            Check(
                "device",
                True,
                f"{device.name} — {device.description} ({device.kind}), "
                f"{device.free_bytes / GIB:.1f} of {device.total_bytes / GIB:.1f} GiB free",
            )
        )
    if not found:
        report.checks.append(Check("device", False, "llama.cpp sees no device"))
    return found


def offload_check(info: ModelInfo, found: list[Device]) -> Check:
    """How many layers llama.cpp put on a GPU, as its log says (the model is loaded)."""
    gpus = [d for d in found if d.gpu]
    where = f"runs on {info.runs_on}" if info.runs_on else ""
    if not gpus:
        return Check(
            "offload",
            True,
            f"0 of {info.layers} layers on a GPU: llama.cpp here has no GPU backend "
            f"(`make run GPU=cuda`, vulkan, metal or rocm builds one); {where}",
        )
    return Check(
        "offload", True, f"{info.offloaded_layers} of {info.layers} layers on a GPU; {where}"
    )


def vram_bytes(summary: GgufSummary, model: ModelSettings, offloaded: int, layers: int) -> int:
    """What the offloaded layers take on the GPUs: their share of the weights, and of the KV
    pool (llama.cpp keeps an offloaded layer's KV with it)."""
    if not offloaded or not layers:
        return 0
    share = min(offloaded, layers) / layers
    kv = summary.kv_bytes(model.pool_tokens(), kv_type=model.kv_type)
    return int((summary.size_bytes + kv) * share)


def vram_check(needed: int, found: list[Device]) -> Check:
    free = sum(d.free_bytes for d in found if d.gpu)
    if not needed:
        return Check("vram", True, "nothing offloaded")
    text = f"the offloaded layers need about {needed / GIB:.1f} GiB, {free / GIB:.1f} GiB free"
    if needed > free:
        return Check("vram", False, f"{text}: lower [model] n_gpu_layers, n_ctx or kv_type")
    return Check("vram", True, text)


def planned_layers(model: ModelSettings, summary: GgufSummary, found: list[Device]) -> int:
    """Layers n_gpu_layers asks llama.cpp to offload (it counts the output layer as one)."""
    layers = summary.n_layer + 1
    if not any(d.gpu for d in found):
        return 0
    wanted = model.n_gpu_layers
    return layers if wanted is None or wanted < 0 else min(wanted, layers)


def fit_checks(
    model: ModelSettings, summary: GgufSummary, report: Report
) -> tuple[list[Device], Check]:
    """Before loading: the devices, and whether the layers to offload fit the GPUs."""
    found = device_checks(report)
    layers = summary.n_layer + 1
    needed = vram_bytes(summary, model, planned_layers(model, summary, found), layers)
    vram = vram_check(needed, found)
    report.checks.append(vram)
    return found, vram
