"""The in-process backend with a record of its steps: which replies each llama_decode held and
how many of their tokens, so tests count steps instead of seconds."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.llama_cpp.engine import Engine
from bot.model.llama_cpp.stream import Stream
from bot.model.types import Generation


@dataclass(frozen=True, slots=True)
class Step:
    """One llama_decode: per generation, (drawn tokens decoded, prompt tokens evaluated)."""

    tokens: dict[int, tuple[int, int]]  # keyed by id(generation)
    fixed_seed_lane: bool = False  # decoded in the fixed-seed lane's own context
    # Graph nodes llama.cpp's CPU backend computed (it asks the abort callback before each):
    # a step computed as two graphs counts about twice a step of one.
    graph_nodes: int = 0

    def generated(self, generation: Generation) -> int:
        return self.tokens.get(id(generation), (0, 0))[0]

    def prompt(self, generation: Generation) -> int:
        return self.tokens.get(id(generation), (0, 0))[1]

    @property
    def prompt_total(self) -> int:
        return sum(p for _, p in self.tokens.values())

    def holds(self, generation: Generation) -> bool:
        return id(generation) in self.tokens


@dataclass
class StepLog:
    """The steps so far, and an optional check run on the model thread after each one."""

    steps: list[Step] = field(default_factory=list)
    after_step: Callable[[Engine, Step], None] | None = None


class RecordingEngine(Engine):
    """The real step loop, noting what each step decoded."""

    log: StepLog
    _nodes = 0
    _counters: list[Any]  # the callbacks installed, kept alive while their contexts live

    def _run(self, group: list[Stream]) -> None:
        before = {s: (s.next_token is not None, s.evaluated) for s in group}
        steps_before = self.steps
        self._count_nodes(group[0].lane.context.ctx)
        nodes_before = self._nodes
        super()._run(group)
        if self.steps == steps_before:
            return  # nothing was decoded
        step = Step(
            {
                id(s.generation): (int(drawn), s.evaluated - evaluated)
                for s, (drawn, evaluated) in before.items()
                if drawn or s.evaluated != evaluated
            },
            fixed_seed_lane=group[0].lane is not self.shared,
            graph_nodes=self._nodes - nodes_before,
        )
        self.log.steps.append(step)
        if self.log.after_step is not None:
            self.log.after_step(self, step)

    def _count_nodes(self, ctx: llama_cpp.llama_context_p) -> None:
        if not hasattr(self, "_counters"):
            self._counters = []
        if any(installed is ctx for installed, _ in self._counters):
            return

        def count(_data: ctypes.c_void_p) -> bool:
            self._nodes += 1
            return False  # never abort

        callback = llama_cpp.ggml_abort_callback(count)
        llama_cpp.llama_set_abort_callback(ctx, callback, None)
        self._counters.append((ctx, callback))


class StepRecordingBackend(LlamaCppBackend):
    """The in-process backend whose engine records its steps in `step_log`."""

    engine_cls = RecordingEngine

    def __init__(self) -> None:
        super().__init__()
        self.step_log = StepLog()

    def _open(self, *args: object, **kwargs: object) -> None:
        super()._open(*args, **kwargs)  # type: ignore[arg-type]
        assert isinstance(self._engine, RecordingEngine)
        self._engine.log = self.step_log
