"""Check of where replies' energy figures come from, and why not from something better."""

from __future__ import annotations

from bot.app.check.report import Check
from bot.settings import Settings


def energy_check(settings: Settings) -> Check:
    """The energy source a start would use (bot.model.energy.choose_source), and why."""
    if settings.model.backend == "openai":
        return Check("energy", True, "not measured: a remote server generates")
    # The chooser's GPU test asks llama.cpp: imported only once a check needs it.
    from bot.model.energy import choose_source
    from bot.model.llama_cpp.backend import runs_on_gpu
    from bot.model.llama_cpp.placement import Offload

    model = settings.model
    offload = Offload(model.n_gpu_layers, model.main_gpu, tuple(model.tensor_split))
    choice = choose_source(settings.footprint.watts_per_core, on_gpu=runs_on_gpu(offload))
    return Check("energy", True, f"{choice.source.name}: {choice.why}")
