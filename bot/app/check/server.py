"""Checks of the openai backend's server: it answers, lists the configured model, and gets
the api_key only over an encrypted or local connection."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.app.check.report import Check, Report
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.model.openai.backend import OpenAIBackend


async def server_checks(backend: OpenAIBackend, settings: Settings, report: Report) -> None:
    from bot.model.openai.errors import ServerError

    model = settings.model
    try:
        names = await backend.models()
    except ServerError as exc:
        report.checks.append(Check("server", False, str(exc)))
        return
    listed = ", ".join(names) or "none listed"
    report.checks.append(Check("server", True, f"{model.base_url} answers; models: {listed}"))
    counts = "; counts approximate: openai_api = chat" if model.openai_api == "chat" else ""
    report.checks.append(
        Check("context", True, f"{model.n_ctx:,} tokens (must not exceed the server's{counts})")
    )
    if model.model and names and model.model not in names:
        report.warnings.append(
            f"[model] model = {model.model!r} is not among the server's models ({listed})"
        )
    host = urlsplit(model.base_url or "").hostname or ""
    plain = (model.base_url or "").startswith("http://")
    if model.api_key is not None and plain and host not in ("localhost", "127.0.0.1", "::1"):
        report.warnings.append(f"the api_key goes unencrypted to {host}: use https://")
