"""A memory of recent things bounded by what they weigh, not by how many there are.

A count bound fails when one entry can be a million times bigger than another: 2,000 small
replies and 2,000 refused 2.6 MB messages are the same "2,000 entries". Caches of chat text
(token counts, replies) are bounded here by the bytes of what they hold.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# What one entry costs besides its key and value: the dict slot, the node, the size kept.
ENTRY_OVERHEAD = 120


def text_bytes(text: str | None) -> int:
    """What a str holds in memory (1, 2 or 4 bytes a character, plus its header)."""
    return 0 if text is None else sys.getsizeof(text)


def text_key(text: str) -> bytes:
    """A key of 32 bytes for a text of any length: its sha256 digest (lone surrogates kept,
    so every str has one)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class SizedCache(Generic[K, V]):
    """A least-recently-used map whose entries together weigh at most `max_bytes`, as
    `weigh(key, value)` says (plus ENTRY_OVERHEAD each). An entry heavier than the whole
    bound is not kept. Safe to use from several threads."""

    def __init__(self, max_bytes: int, weigh: Callable[[K, V], int]) -> None:
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """What the entries weigh now (never more than max_bytes)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when not kept."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V) -> None:
        """Keep `value` as the most recent; the oldest entries go while over the bound."""
        weight = self._weigh(key, value) + ENTRY_OVERHEAD
        with self._lock:
            self._drop(key)
            if weight > self.max_bytes:
                return
            self._entries[key] = (value, weight)
            self._bytes += weight
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def pop(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            self._drop(key)
            return None if found is None else found[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _drop(self, key: K) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[1]
