"""The engine's side of pictures (bot.model.llama_cpp.vision): the pictures of replies waiting
to start, and the one picture evaluated between two steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bot.model.footprint import Accountant
from bot.model.llama_cpp.stream import Stream
from bot.model.llama_cpp.vision import PromptImages, Vision
from bot.model.types import Generation, GenerationRequest


class Pictures:
    """The engine's side of pictures: the waiting replies' pictures until they start, and the
    one picture evaluated before a step."""

    def __init__(self, vision: Vision | None) -> None:
        self.vision = vision
        self._waiting: dict[Generation, PromptImages] = {}

    def prompt(
        self, generation: Generation, prompt_of: Callable[[GenerationRequest], list[int]]
    ) -> list[int]:
        """A request's prompt cells; its pictures are kept until `take`. A request with
        pictures for a model without a projector is refused (the core sends pictures only
        when ModelInfo.sees_images)."""
        request = generation.request
        if not request.images:
            return prompt_of(request)
        if self.vision is None:
            raise ValueError("this model cannot see images ([model] mmproj is not set)")
        # A caller's measured prompt (request.prompt) has no pictures' cells: rendered here.
        cells, self._waiting[generation] = self.vision.prompt(request.messages, request.images)
        return cells

    def take(self, generation: Generation) -> PromptImages | None:
        return self._waiting.pop(generation, None)

    def drop(self, generation: Generation) -> None:
        images = self._waiting.pop(generation, None)
        if images is not None:
            images.close()

    def evaluate_next(
        self, group: Sequence[Stream], footprint: Accountant
    ) -> tuple[Stream, str] | None:
        """Evaluate the first picture due in the group (at most one per step, so the others
        wait for one picture at most); (the reply, why) if that failed."""
        for stream in group:
            slot = stream.image_due()
            if slot is None or self.vision is None:
                continue
            lane = stream.lane
            footprint.before_step()
            cpu_started, started = time.process_time(), time.perf_counter()
            try:
                self.vision.evaluate(
                    slot, lane.context.ctx, lane.context.memory, stream.seq, stream.position,
                    lane.batch.capacity, lane.sequences.evict,
                )  # fmt: skip
            except Exception as exc:
                return stream, str(exc)
            wall_s = time.perf_counter() - started
            footprint.step({stream: slot.n_tokens}, time.process_time() - cpu_started, wall_s)
            stream.evaluated_part(stream.prompt[slot.start : slot.start + slot.n_tokens])
            return None
        return None

    def close(self) -> None:
        for images in self._waiting.values():
            images.close()
        self._waiting.clear()
        if self.vision is not None:
            self.vision.close()
