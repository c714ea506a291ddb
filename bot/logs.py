"""Logging: structlog, JSON lines when not on a terminal, readable on one; secrets redacted.

Library loggers (stdlib logging) go through the same processors, so a token inside a URL in
some library's message is redacted too, and so is a URL's user:password.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from bot.masking import mask_url

REDACTED = "***"
# Whole names or suffixes: "access_token" is secret, "prompt_tokens" is a count.
_SECRET_KEYS = re.compile(
    r"(^|_)(token|password|passwd|secret|api_key|authorization)$", re.IGNORECASE
)
_SECRET_PATTERNS = (
    re.compile(r"((?:access_token|token|password|api_key)=)[^&\s\"']+", re.IGNORECASE),
    # A response or dict printed as text: 'access_token': 'syt_...' or "password": "..."
    re.compile(
        r"""(['"](?:access_token|token|password|api_key|refresh_token)['"]\s*:\s*['"])[^'"]+""",
        re.IGNORECASE,
    ),
    re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    re.compile(r"(Bot\s+)[A-Za-z0-9._-]{20,}"),  # Discord's Authorization header
)
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A configured secret: scrubbed from every log line wherever it appears."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    text = mask_url(text)
    for secret in _known_secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redacted(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key):
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):  # e.g. headers={"Authorization": "Bearer ..."}
        return {k: _redacted(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redacted("", v) for v in value)
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = _redacted(key, value)
    return event


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger used once would keep this configuration for good, past a later
        # configure or a test's capture; assembling one per line costs microseconds.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
