"""What the daemon needs from a model, wherever it runs, and the one place that picks one.

`llama_cpp` (bot.model.llama_cpp.backend.LlamaCppBackend) runs the model in this process; `openai`
(bot.model.openai.backend.OpenAIBackend) sends prompts to an OpenAI-compatible server. Both render
and count with the same GGUF's template and vocabulary (bot.model.template), so trimming to the
context window stays exact whichever one generates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from bot.model.types import EngineStats, Generation, GenerationRequest, ModelInfo
from bot.settings import FootprintSettings, ModelSettings


class Backend(Protocol):
    """What the daemon needs from a model: generating, rendering and counting, its KV state."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def slots(self) -> int:
        """How many generations may run at once (`[model] parallel`); the daemon starts no
        more than that."""
        ...

    def start(self, request: GenerationRequest) -> Generation:
        """Begin generating; iterate the Generation for text, read `.result` when it ends."""
        ...

    def render(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> str: ...

    def tokenize(self, text: str, special: bool = True) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    async def forget(self, key: str | None = None) -> None:
        """Drop whatever the backend keeps of a channel's conversation (all when None)."""
        ...

    def cache_state(self, key: str) -> str: ...

    async def close(self) -> None: ...


def engine_stats(backend: object) -> EngineStats | None:
    """The backend's `stats()`, if it has that optional hook (an engine that can tell). A
    hook that fails reads as none: it must not fail a scrape or `!status`."""
    stats = getattr(backend, "stats", None)
    try:
        return stats() if callable(stats) else None
    except Exception:
        return None


def preparing(backend: object) -> contextlib.AbstractContextManager[None]:
    """Around building a reply and starting it: the backend's optional hook `preparing`, with
    which an idle model holds its first step for replies being built together."""
    hook = getattr(backend, "preparing", None)
    return hook() if callable(hook) else contextlib.nullcontext()


async def load_backend(
    model: ModelSettings, path: Path, footprint: FootprintSettings | None = None
) -> Backend:
    """The configured backend, ready to answer. `path` is the GGUF: the model itself for
    llama_cpp, its tokenizer and chat template for openai; `footprint`: the estimate's
    watts per core. Raises ModelFileError."""
    footprint = footprint or FootprintSettings.model_validate({})
    if model.backend == "openai":
        from bot.model.openai.backend import OpenAIBackend

        assert model.base_url is not None  # ModelSettings validates this
        return await OpenAIBackend.load(
            path,
            base_url=model.base_url,
            n_ctx=model.n_ctx,
            api_key=model.api_key.get_secret_value() if model.api_key else None,
            model=model.model,
            timeout_s=model.timeout_s,
            parallel=model.parallel,
            api=model.openai_api,
            vision=model.openai_vision,
        )
    from bot.model.energy import choose_source
    from bot.model.llama_cpp.backend import LlamaCppBackend, runs_on_gpu
    from bot.model.llama_cpp.placement import Attention, Offload

    offload = Offload(model.n_gpu_layers, model.main_gpu, tuple(model.tensor_split))
    energy = choose_source(footprint.watts_per_core, on_gpu=runs_on_gpu(offload)).source
    return await LlamaCppBackend.load(
        path,
        model.n_ctx,
        model.threads(),
        model.n_batch,
        kv_cache_mb=model.kv_cache_mb,
        parallel=model.parallel,
        pool_tokens=model.pool_tokens(),
        offload=offload,
        attention=Attention(model.kv_type, model.flash_attn),
        energy=energy,
        mmproj=model.mmproj.expanduser() if model.mmproj is not None else None,
        kv_layout=model.kv_layout,
    )
