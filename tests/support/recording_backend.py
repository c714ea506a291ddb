"""The real in-process engine, keeping every generation it started so a test can read each
one's request and result."""

from __future__ import annotations

from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import Generation, GenerationRequest


class RecordingBackend(LlamaCppBackend):
    """The real engine, keeping each generation to read its request and result."""

    def __init__(self) -> None:
        super().__init__()
        self.generations: list[Generation] = []

    def start(self, request: GenerationRequest) -> Generation:
        generation = super().start(request)
        self.generations.append(generation)
        return generation
