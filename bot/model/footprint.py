"""What each reply cost the model: time on it and energy, accounted step by step.

The engine reports every step (one llama_decode and the sampling after it): the replies it
held, their tokens in it, its CPU and wall time. A step's CPU and wall time go to its replies
by their share of its tokens. Energy is read from the source (bot.model.energy) over windows
of about a second rather than per step (RAPL and /proc/stat count in coarse steps), and each
window's joules go to the replies by the CPU time they were given in it. A reply's window is
closed when it ends, so its figure is complete when its result is read. Called from the model
thread only; no llama_cpp here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import structlog

from bot.model.energy import Source, split_by_tokens

log = structlog.get_logger(__name__)

WINDOW_S = 1.0


@dataclass(slots=True)
class ReplyFootprint:
    """One reply's share so far: time on the model, CPU time, energy."""

    model_s: float = 0.0
    cpu_s: float = 0.0
    joules: float = 0.0
    pending_cpu_s: float = 0.0  # CPU time in the open window, not yet turned into joules

    def add(self, other: ReplyFootprint) -> ReplyFootprint:
        """This share with `other`'s added (its joules counted already)."""
        self.model_s += other.model_s
        self.cpu_s += other.cpu_s
        self.joules += other.joules
        return self


class Accountant:
    """Shares steps and energy windows out to the replies that took part."""

    def __init__(
        self,
        source: Source,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.source = source
        self.window_s = window_s
        self._clock = clock
        self._replies: dict[Hashable, ReplyFootprint] = {}
        self._mark: object = None
        self._active = False  # a window is open (its mark read)
        self._opened = 0.0
        self._window_cpu_s = 0.0
        self.total_joules = 0.0  # every joule given to a reply so far
        self._warned = False

    def before_step(self) -> None:
        """A step is about to run: the energy window is open from before it."""
        if not self._active:
            self._open()

    def step(self, tokens: Mapping[Hashable, int], cpu_s: float, wall_s: float) -> None:
        """A step held these replies with these tokens, and took this CPU and wall time."""
        cpu = split_by_tokens(cpu_s, tokens)
        wall = split_by_tokens(wall_s, tokens)
        for key in tokens:
            reply = self._replies.setdefault(key, ReplyFootprint())
            reply.model_s += wall[key]
            reply.cpu_s += cpu[key]
            reply.pending_cpu_s += cpu[key]
        self._window_cpu_s += cpu_s
        if self._clock() - self._opened >= self.window_s:
            self._close()

    def finish(self, key: Hashable) -> ReplyFootprint:
        """The reply ended: its whole share (its open window is closed first)."""
        if key in self._replies and self._replies[key].pending_cpu_s > 0:
            self._close()
        return self._replies.pop(key, ReplyFootprint())

    def carry(self, key: Hashable, spent: ReplyFootprint) -> None:
        """Work done earlier for this reply (its prompt read ahead) is its own."""
        self._replies.setdefault(key, ReplyFootprint()).add(spent)

    def idle(self) -> None:
        """No reply runs: what the box uses until the next one is not hearthbot's to count."""
        if self._active:
            self._close()
        self._active = False

    def _open(self) -> None:
        try:
            self._mark = self.source.mark()
        except Exception as exc:  # a counter that fails must not fail replies
            self._warn(exc)
            self._active = False
            return
        self._active = True
        self._opened = self._clock()
        self._window_cpu_s = 0.0

    def _close(self) -> None:
        joules = 0.0
        if self._active:
            try:
                joules = self.source.joules_since(self._mark)
            except Exception as exc:
                self._warn(exc)
        pending = {k: r.pending_cpu_s for k, r in self._replies.items() if r.pending_cpu_s > 0}
        for key, share in split_by_cpu(joules, pending).items():
            self._replies[key].joules += share
            self._replies[key].pending_cpu_s = 0.0
            self.total_joules += share
        self._open()

    def _warn(self, exc: Exception) -> None:
        if not self._warned:  # once, not once a step
            self._warned = True
            log.warning("energy counter unreadable", source=self.source.name, error=str(exc))


def split_by_cpu(joules: float, cpu_s: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """A window's joules, by the CPU time each reply was given in it."""
    total = sum(cpu_s.values())
    if total <= 0:
        return dict.fromkeys(cpu_s, 0.0)
    return {key: joules * c / total for key, c in cpu_s.items()}
