"""Checks of the model: the file, the memory it needs, and a real load (for the openai
backend: its vocabulary and template, then the server)."""

from __future__ import annotations

from bot.app.bootstrap import model_path
from bot.app.check.report import Check, Report
from bot.app.check.server import server_checks
from bot.model.gguf import OVERHEAD_BYTES, GgufSummary, ModelFileError, inspect_model
from bot.model.memory import available_memory
from bot.settings import ModelSettings, Settings

GIB = 2**30


async def model_checks(settings: Settings, report: Report) -> None:
    # The backends import llama_cpp: only once a check needs them.
    from bot.model.backend import load_backend
    from bot.model.openai.backend import OpenAIBackend

    model = settings.model
    remote = model.backend == "openai"
    name = "tokenizer" if remote else "model"
    try:
        path = model_path(settings)
        summary = inspect_model(path)
    except ModelFileError as exc:
        report.checks.append(Check(name, False, str(exc)))
        return
    if not remote:
        memory = memory_check(summary, model)
        report.checks.append(memory)
        if not memory.ok:
            return  # loading would only thrash
    try:
        backend = await load_backend(model, path, settings.footprint)
    except ModelFileError as exc:
        report.checks.append(Check(name, False, str(exc)))
        return
    try:
        info = backend.info
        quant = info.quantization or "unknown quantization"
        if isinstance(backend, OpenAIBackend):
            report.checks.append(
                Check(name, True, f"{path} — {info.name}, {quant} (vocabulary and template only)")
            )
            await server_checks(backend, settings, report)
        else:
            report.checks.append(
                Check(
                    name,
                    True,
                    f"{path} — {info.name}, {info.params_text} parameters, {quant} "
                    f"({info.description})",
                )
            )
            report.checks.append(
                Check("context", True, f"{info.n_ctx:,} tokens, {info.n_threads} threads")
            )
    finally:
        await backend.close()


def memory_check(summary: GgufSummary, model: ModelSettings) -> Check:
    """The same estimate LlamaCppBackend.load enforces, itemized."""
    saved = model.kv_cache_mb * 2**20
    needed = summary.needed_bytes(model.n_ctx) + saved
    available = available_memory()
    parts = (
        f"needs about {needed / GIB:.1f} GiB (weights {summary.size_bytes / GIB:.1f} + KV "
        f"cache for {model.n_ctx:,} tokens {summary.kv_bytes(model.n_ctx) / GIB:.1f} + saved "
        f"channels {saved / GIB:.1f} + working memory {OVERHEAD_BYTES / GIB:.2f} GiB)"
    )
    if available is None:
        return Check("memory", True, f"{parts}; available memory unknown")
    if needed > available:
        return Check(
            "memory",
            False,
            f"{parts} but only {available / GIB:.1f} GiB is available: use a smaller "
            "quantization, n_ctx or kv_cache_mb",
        )
    return Check("memory", True, f"{parts}, {available / GIB:.1f} GiB available")
