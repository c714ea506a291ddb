"""When the bot answers in a channel: its trigger mode, decided by pure functions.

The adapters deliver every message an allowed person writes where the bot can read it, with
`addressed` (a mention, a reply to the bot, a DM) and `named` (the bot's own name on that
platform as a whole word); the core decides by the channel's mode:

- `mention` (the default): addressed messages only;
- `all`: every message (a free-chat channel);
- `name`: addressed, or the bot's name or one of `[bot] keywords` as a whole word;
- `off`: commands only.

A direct chat is always answered, whatever the mode. A message that was not said to the bot
arrives with its files named, not read; once its mode takes it, `read_in_full` has them read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import get_args

from bot.events import Adapter, Incoming, ReadsAttachments
from bot.settings import Trigger

TRIGGERS: tuple[str, ...] = get_args(Trigger)
DEFAULT_TRIGGER: Trigger = "mention"


def names_any(text: str, names: Iterable[str]) -> bool:
    """Whether one of `names` is in `text` as a whole word (case-insensitive): "Hearth, hi"
    and "ask hearth." name "hearth"; "hearthstone" does not."""
    words = [re.escape(n.strip()) for n in names if n.strip()]
    if not words:
        return False
    pattern = rf"(?<!\w)(?:{'|'.join(sorted(words, key=len, reverse=True))})(?!\w)"
    return re.search(pattern, text, re.IGNORECASE) is not None


def answers(
    mode: str, is_direct: bool, addressed: bool, named: bool, text: str, keywords: Iterable[str]
) -> bool:
    """Whether a message that is not a command is answered in a channel of `mode`."""
    if is_direct:
        return True
    if mode == "all":
        return True
    if mode == "name":
        return addressed or named or names_any(text, keywords)
    if mode == "off":
        return False
    return addressed  # mention, and anything unknown: today's behaviour


def runs_commands(mode: str, *, is_direct: bool, addressed: bool) -> bool:
    """Whether a command is taken: when the bot is spoken to (in every mode, `off` too), and
    in an `all` channel without that, since every message there is for the bot."""
    return is_direct or addressed or mode == "all"


def pick(layers: Iterable[str | None], fallback: str) -> Trigger:
    """The most specific mode set (channel → server → platform config → `[bot] trigger`)."""
    for layer in layers:
        if layer in TRIGGERS:
            return layer  # type: ignore[return-value]
    return fallback if fallback in TRIGGERS else DEFAULT_TRIGGER  # type: ignore[return-value]


async def read_in_full(adapters: Mapping[str, Adapter], message: Incoming) -> Incoming:
    """A message the channel's mode takes though it was not said to the bot (`all`, `name`):
    its attachments read now, as for one said to it, by its adapter if that can."""
    adapter = adapters.get(message.platform)
    if message.addressed or not isinstance(adapter, ReadsAttachments):
        return message
    return await adapter.attachments.read_attachments(message)
