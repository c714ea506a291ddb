"""Saved KV state of recent channels, least recently used first out, within a byte budget.

llama.cpp keeps one sequence resident in the context. When another channel's turn comes, the
resident channel's KV is copied out (`llama_state_seq_get_data`: only the KV of that sequence,
no logits) and kept here, so that channel's next message starts from its cached prefix instead
of re-reading the whole conversation. Copying a 1,500-token conversation of a 0.5B model is
~18 MB and a few milliseconds; evaluating it again is seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True, eq=False)  # an array has no == to compare by
class Snapshot:
    """One channel's KV state, copied out of the context, and the tokens it holds."""

    tokens: tuple[int, ...]  # what the KV holds, position by position
    data: npt.NDArray[np.uint8]  # llama_state_seq_get_data's output, written there directly

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (vectorized: prompts are long)."""
    m = min(len(a), len(b))
    if m == 0:
        return 0
    same = np.asarray(a[:m]) == np.asarray(b[:m])
    first_diff = int(np.argmin(same))
    return m if same[first_diff] else first_diff


class SnapshotCache:
    """The saved snapshots of recent channels, least recently stored out first, within a
    byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[str, Snapshot] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def put(self, key: str, snapshot: Snapshot) -> bool:
        """Keep `snapshot` for `key`, evicting the least recently used ones to stay within the
        budget. False (and nothing kept) when it alone is larger than the budget."""
        self.drop(key)
        if snapshot.nbytes > self.budget_bytes:
            return False
        while self.total_bytes + snapshot.nbytes > self.budget_bytes:
            _, evicted = self._items.popitem(last=False)
            self.total_bytes -= evicted.nbytes
        self._items[key] = snapshot
        self.total_bytes += snapshot.nbytes
        return True

    def peek(self, key: str) -> Snapshot | None:
        return self._items.get(key)

    def take(self, key: str) -> Snapshot | None:
        """Remove and return: once restored, the resident sequence is the fresher copy."""
        snapshot = self._items.pop(key, None)
        if snapshot is not None:
            self.total_bytes -= snapshot.nbytes
        return snapshot

    def drop(self, key: str) -> None:
        self.take(key)

    def clear(self) -> None:
        self._items.clear()
        self.total_bytes = 0


@dataclass(slots=True)
class Rate:
    """An exponentially weighted average of a throughput (units per second)."""

    value: float
    weight: float = 0.3

    def add(self, units: float, seconds: float) -> None:
        if units > 0 and seconds > 0:
            self.value = (1 - self.weight) * self.value + self.weight * (units / seconds)


def restore_wins(
    snapshot_bytes: int,
    tokens_saved: int,
    copy_rate: Rate,
    prompt_rate: Rate,
) -> bool:
    """Restore a snapshot only when copying it back is faster than evaluating the tokens it
    saves (for a tiny model and a short prompt, evaluating can win)."""
    return snapshot_bytes / copy_rate.value < tokens_saved / prompt_rate.value
