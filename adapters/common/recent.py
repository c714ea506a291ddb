"""The messages an adapter saw lately, for the core's reply quotes (bot.prompt.quotes).

Bounded by count and by characters, and kept true: a deleted (redacted) message is marked
gone, an edit by its author replaces the text, and `!forget` marks an author's messages written
before it gone, also those read afterwards (the core decides by its own record too:
bot.forgotten). So a reply to a deleted or forgotten message never brings its text back, from
here or from the platform.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from bot.events import Quoted

MAX_MESSAGES = 2000
MAX_CHARS = 2_000_000  # ~8 MB at worst: a few hundred long pastes, not 2,000 of them
MAX_FORGOTTEN = 10_000  # authors whose earlier messages are not kept (ids and times only)


class RecentMessages:
    """Message id → the message as last seen, or None once it is known to be gone."""

    def __init__(self, max_messages: int = MAX_MESSAGES, max_chars: int = MAX_CHARS) -> None:
        self.max_messages = max_messages
        self.max_chars = max_chars
        self._messages: OrderedDict[str, Quoted | None] = OrderedDict()
        self.chars = 0
        # Author id → messages they wrote before this time are forgotten (`!forget`).
        self._forgotten: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, message_id: str) -> Quoted | None:
        return self._messages.get(message_id)

    def saw(self, message_id: str, message: Quoted | None) -> None:
        """A message as it is now (None: gone, or not readable as text)."""
        if message is not None and self._is_forgotten(message):
            message = None  # kept as gone: not read again from the platform either
        self._remove(message_id)
        self._messages[message_id] = message
        self.chars += len(message.text) if message else 0
        while self._messages and (
            len(self._messages) > self.max_messages or self.chars > self.max_chars
        ):
            self._remove(next(iter(self._messages)))

    def deleted(self, message_id: str) -> None:
        """Gone on the platform: if kept, kept as gone, so nothing reads it back meanwhile.
        (One not kept is not added: the platform says it is gone, if anyone asks.)"""
        if message_id in self._messages:
            self.saw(message_id, None)

    def edited(self, message_id: str, author_id: str, text: str) -> None:
        """Its author changed it (an edit by anyone else changes nothing)."""
        known = self._messages.get(message_id)
        if known is not None and known.author_id == author_id:
            self.saw(message_id, dataclasses.replace(known, text=text))

    def forget_author(self, author_id: str, before: float) -> None:
        """`!forget`: the author's messages written before `before` are gone, those kept now
        and those seen later."""
        self._forgotten[author_id] = max(before, self._forgotten.get(author_id, before))
        self._forgotten.move_to_end(author_id)
        while len(self._forgotten) > MAX_FORGOTTEN:  # the core's record still hides them
            self._forgotten.popitem(last=False)
        for message_id, known in list(self._messages.items()):
            if known is not None and self._is_forgotten(known):
                self.saw(message_id, None)

    def _is_forgotten(self, message: Quoted) -> bool:
        before = self._forgotten.get(message.author_id)
        return before is not None and (message.sent_at is None or message.sent_at < before)

    def _remove(self, message_id: str) -> None:
        known = self._messages.pop(message_id, None)
        self.chars -= len(known.text) if known else 0
