"""What of an incoming message's text is read: how long it may be, and which characters stay.
Pure functions (bot.intake applies them to every message)."""

from __future__ import annotations

import re

# No text longer than this many characters per token of context can fit: about four is usual,
# and a message must leave room for the persona and the answer besides.
CHARS_PER_TOKEN_AT_MOST = 8
# Unicode's control characters (category Cc, a closed set) but newline and tab.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def max_message_chars(n_ctx: int) -> int:
    """The longest message worth reading for a context of `n_ctx` tokens: anything longer is
    refused before any work is spent on it (attachments included)."""
    return n_ctx * CHARS_PER_TOKEN_AT_MOST


def clean_text(text: str) -> str:
    """Drop control characters a platform may deliver (NUL, escape sequences, lone
    surrogates) but keep newlines and tabs. Linear and in C: a long paste costs milliseconds."""
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # a lone surrogate → "?"
    return _CONTROL.sub("", text).strip()
