"""One generation inside the step loop: where its prompt stands, its own sampler, the
token it decodes next, and how each drawn token ends up as text (or ends the reply)."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.model.llama_cpp.lane import Lane
from bot.model.llama_cpp.pool import Resident
from bot.model.llama_cpp.sampler import ReplySampler
from bot.model.llama_cpp.vision import ImageSlot, PromptImages
from bot.model.types import Generation
from bot.model.writer import GenerationWriter

# How often the aggregate tokens/s figure is renewed.
RATE_WINDOW_S = 1.0


@dataclass(slots=True)
class TokenRate:
    """Tokens generated per second by all replies, renewed every RATE_WINDOW_S."""

    since: float = field(default_factory=time.perf_counter)
    tokens: int = 0  # generated since `since`
    value: float = 0.0

    def renew(self, running: bool) -> float:
        """The figure now; 0 while no reply runs."""
        now = time.perf_counter()
        if not running or now - self.since >= RATE_WINDOW_S:
            self.value = self.tokens / (now - self.since) if running else 0.0
            self.since, self.tokens = now, 0
        return self.value


def cells_needed(generation: Generation, prompt: Sequence[int], n_ctx: int) -> int:
    """KV cells a reply may come to need: its prompt and its reply, within its window."""
    return min(n_ctx, len(prompt) + generation.request.sampling.max_tokens)


class Stream:
    """A generation being evaluated or generated, on its resident sequence of the pool."""

    def __init__(
        self,
        generation: Generation,
        writer: GenerationWriter,
        prompt: Sequence[int],
        lane: Lane,
        resident: Resident,
        reuse: int,
        sampler: ReplySampler,
        n_ctx: int,
        images: PromptImages | None = None,
    ) -> None:
        self.generation = generation
        self.writer = writer
        self.prompt = prompt
        self.lane = lane
        self.resident = resident
        self.evaluated = reuse  # prompt tokens in the KV so far
        self._cuts = list(lane.sequences.cuts(resident, reuse, len(prompt)))
        self.sampler = sampler
        self.n_ctx = n_ctx
        self.images = images  # its prompt's pictures, evaluated apart (None: none)
        # A fixed-seed reply decodes alone, in the fixed-seed lane.
        self.solo = generation.request.cold
        self.next_token: int | None = None  # drawn, to be decoded in the next step
        self.max_tokens = generation.request.sampling.max_tokens
        self.reserved = cells_needed(generation, prompt, n_ctx)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        writer.result.prompt_tokens = len(prompt)
        writer.result.reused_tokens = reuse

    @property
    def seq(self) -> int:
        return self.resident.seq

    @property
    def position(self) -> int:
        """Where the next token goes: the sequence holds positions 0 .. position - 1."""
        return len(self.resident.tokens)

    @property
    def prefilling(self) -> bool:
        return self.evaluated < len(self.prompt)

    def prompt_part(self, budget: int) -> Sequence[int]:
        """The next at most `budget` prompt tokens to evaluate (up to the next cut, if the lane
        wants the prompt cut in given places)."""
        end = self.evaluated + budget
        while self._cuts and self._cuts[0] <= self.evaluated:
            self._cuts.pop(0)
        if self._cuts:
            end = min(end, self._cuts[0])
        if self.images is not None:  # text only up to the next picture
            picture = self.images.next_start(self.evaluated)
            end = end if picture is None else min(end, picture)
        return self.prompt[self.evaluated : end]

    def image_due(self) -> ImageSlot | None:
        """The picture whose cells come next in the prompt, if they do."""
        if self.images is None or not self.prefilling:
            return None
        return self.images.at.get(self.evaluated)

    def evaluated_part(self, tokens: Sequence[int]) -> None:
        """A step evaluated these tokens of the prompt (or the drawn token) for this stream."""
        self.resident.tokens.extend(tokens)
        if self.prefilling:
            self.evaluated += len(tokens)
        else:
            self.next_token = None

    def accept(
        self, token: int, is_end: Callable[[int], bool], piece: Callable[[int], bytes]
    ) -> bool:
        """Handle a drawn token: show it, or end the reply. True when the reply ended."""
        writer, result = self.writer, self.writer.result
        writer.first_token()
        if is_end(token):
            result.finish = "stop"
            return True
        if writer.write(self._decoder.decode(piece(token))):
            result.finish = "stop"
            return True
        if result.generated_tokens >= self.max_tokens:
            result.finish = "length"
            return True
        if self.position >= self.n_ctx:
            result.finish = "length"  # the channel's context window is full
            return True
        self.next_token = token
        return False
