"""Which prompts a step reads, and how much of each: shortest first, and a further prompt in
the same step only when that costs the others less time than a step of its own would.

A step's time is close to a fixed part (`fixed_s`) plus a part per row of the batch
(`row_s`), both fitted to the engine's own recent steps (`StepCost`). On a CPU nearly all of
a step is rows: four 30-token follow-ups read in one step give all four their first token
after 120 rows' time, read one per step the first after 30, the second after 60, and so on,
for one fixed part more each. On a GPU the fixed part dominates and the same four share a step.
Shortest first also means a short question is never read after a long pasted text's chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Fitted seconds at or below this per row are taken as no slope (rows never varied enough).
_FLAT = 1e-9


@dataclass(slots=True)
class StepCost:
    """A step's seconds as `fixed_s + row_s × rows`, a least-squares line through the recent
    steps, each step counting `decay` times as much as the one after it."""

    decay: float = 0.98
    _weight: float = 0.0
    _rows: float = 0.0
    _seconds: float = 0.0
    _rows_sq: float = 0.0
    _rows_seconds: float = 0.0

    def add(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._weight = d * self._weight + 1
        self._rows = d * self._rows + rows
        self._seconds = d * self._seconds + seconds
        self._rows_sq = d * self._rows_sq + rows * rows
        self._rows_seconds = d * self._rows_seconds + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed_s, row_s), or None while the steps seen never differed in size."""
        w, x, y = self._weight, self._rows, self._seconds
        spread = w * self._rows_sq - x * x
        if w < 2 or spread <= 1e-6 * w * w:
            return None
        row_s = (w * self._rows_seconds - x * y) / spread
        fixed_s = (y - row_s * x) / w
        return max(fixed_s, 0.0), max(row_s, 0.0)


def prompt_parts(
    remaining: Sequence[int], ready: Sequence[int], budget: int, cost: StepCost
) -> list[int]:
    """How many prompt tokens each reply still being read evaluates in this step.

    `remaining[i]` is what is left of reply i's prompt, `ready[i]` how much of it may go in one
    step now (less at a cut or a picture), `budget` the step's room for prompt tokens. Replies
    are taken shortest first. The first always gets its part; another joins only while the
    rows it adds, times the replies whose first token the step then gives, cost less than the
    fixed part of the step it would otherwise take, times the replies that would wait for it
    (itself and those after it). Until the fit exists every part that fits joins, as in
    llama-server.
    """
    parts = [0] * len(remaining)
    order = sorted((i for i in range(len(remaining)) if ready[i] > 0), key=lambda i: remaining[i])
    fitted = cost.fit()
    finishing = 0  # replies whose prompt this step completes
    for place, i in enumerate(order):
        part = min(ready[i], budget)
        if part <= 0:
            break
        if place > 0 and fitted is not None and finishing > 0:
            fixed_s, row_s = fitted
            waiting = len(order) - place
            if row_s > _FLAT and finishing * row_s * part > fixed_s * waiting:
                break  # a step of its own, next
        parts[i] = part
        budget -= part
        finishing += part == remaining[i]
    return parts
