"""Checks of the model: the file, the memory it needs, and a real load (for the openai
backend: its vocabulary and template, then the server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.app.bootstrap import model_path
from bot.app.check.report import Check, Report
from bot.app.check.server import server_checks
from bot.model.catalog import CatalogEntry, CatalogError, load_catalog, neighbours, params_value
from bot.model.gguf import OVERHEAD_BYTES, GgufSummary, ModelFileError, inspect_model
from bot.model.memory import available_memory
from bot.settings import ModelSettings, Settings

if TYPE_CHECKING:
    from bot.model.llama_cpp.devices import Device

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
    found: list[Device] = []
    if not remote:
        from bot.app.check.gpu import fit_checks

        memory = memory_check(summary, model)
        report.checks.append(memory)
        found, vram = fit_checks(model, summary, report)
        if not (memory.ok and vram.ok):
            return  # loading would only thrash or fail
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
            if info.sees_images:
                report.checks.append(
                    Check(
                        "images",
                        True,
                        f"{model.mmproj} — a picture takes {info.image_tokens} tokens, shrunk "
                        f"to {info.image_side_px} px",
                    )
                )
            from bot.app.check.gpu import offload_check

            report.checks.append(offload_check(info, found))
            try:
                entries = load_catalog()
            except CatalogError as exc:
                report.checks.append(Check("size", False, str(exc)))
            else:
                report.checks.append(
                    size_check(
                        summary,
                        info.n_params,
                        info.quantization,
                        model,
                        entries,
                        available_memory(),
                    )
                )
    finally:
        await backend.close()


def memory_check(summary: GgufSummary, model: ModelSettings) -> Check:
    """The same estimate LlamaCppBackend.load enforces (the whole KV pool), itemized."""
    saved = model.kv_cache_mb * 2**20
    pool = model.pool_tokens()
    needed = summary.needed_bytes(pool, kv_type=model.kv_type) + saved
    available = available_memory()
    kv = summary.kv_bytes(pool, kv_type=model.kv_type)
    parts = (
        f"needs about {needed / GIB:.1f} GiB (weights {summary.size_bytes / GIB:.1f} + "
        f"{model.kv_type} KV cache for {pool:,} tokens {kv / GIB:.1f} + saved "
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


def size_check(
    summary: GgufSummary,
    n_params: float,
    quant: str,
    model: ModelSettings,
    entries: list[CatalogEntry],
    available: int | None,
) -> Check:
    """What the model's parameters and quantization mean in memory, and what the catalog's
    next size down and up would need with the same KV pool (`hearthbot model suggest` has
    them all)."""
    pool = model.pool_tokens()
    size = (
        f"{n_params / 1e9:.1f}B"
        if n_params >= 1e9
        else f"{n_params / 1e6:.0f}M"
        if n_params >= 1e6
        else f"{n_params:,.0f}"
    )
    bits = summary.size_bytes * 8 / n_params if n_params else 0.0
    per_token = summary.kv_bytes(1, kv_type=model.kv_type)
    parts = [
        f"{size} parameters at {quant or 'an unknown quantization'}: {bits:.1f} bits per "
        f"weight, {summary.size_bytes / GIB:.1f} GiB of weights; KV cache "
        f"{per_token / 1024:.0f} KiB per token ({model.kv_type}), "
        f"{per_token * pool / GIB:.1f} GiB for the pool of {pool:,} tokens"
    ]
    # The catalog's own file counts by its nominal size ("1B" is Llama 3.2 1B's 1.24B).
    own = next((e for e in entries if e.file == summary.path.name), None)
    below, above = neighbours(entries, params_value(own.params) if own else n_params, quant)
    saved = model.kv_cache_mb * 2**20
    for label, entry in (("down", below), ("up", above)):
        if entry is None:
            parts.append(f"next size {label}: none in the catalog")
            continue
        needed = entry.needed_bytes(pool, model.kv_type, saved)
        fits = ""
        if available is not None:
            verdict = "fits" if needed <= available else "does not fit"
            fits = f" ({verdict} the {available / GIB:.1f} GiB available)"
        parts.append(f"next size {label}: {entry.spec} needs about {needed / GIB:.1f} GiB{fits}")
    return Check("size", True, "; ".join(parts))
