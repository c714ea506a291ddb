"""What both backends do with the text they generate, in one place.

A backend produces pieces of text (a token, a streamed chunk); the writer holds back what
could be the start of a stop string or another speaker's turn, hands the rest to the
listener, and fills in the result: the text, the timings, how the generation ended.
Backend-neutral: nothing here imports llama_cpp or aiohttp.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import structlog

from bot.model.types import TURN_MARKERS, Generation, StopScanner

log = structlog.get_logger(__name__)


class Throughput:
    """Tokens per second over the last `window_s` seconds, all generations together: an
    engine's `stats().tokens_per_s`. Counted in whole-second buckets, so memory stays small."""

    def __init__(self, window_s: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, tokens], oldest first

    def add(self, tokens: int = 1) -> None:
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += tokens
        else:
            self._buckets.append([second, tokens])
        self._forget_before(second)

    def per_s(self) -> float:
        self._forget_before(int(self._clock()))
        return sum(tokens for _, tokens in self._buckets) / self.window_s

    def _forget_before(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()


class GenerationWriter:
    """Writes one generation's text and result, the same way for every backend."""

    def __init__(self, generation: Generation, meter: Throughput | None = None) -> None:
        self.generation = generation
        self.meter = meter
        self.result = generation.result
        self.result.seed = generation.request.seed
        self.started = time.perf_counter()
        self._scanner = StopScanner((*generation.request.stop, *TURN_MARKERS))

    def first_token(self) -> None:
        """Note the time to the first token (later calls change nothing)."""
        if self.result.first_token_s is None:
            self.result.first_token_s = time.perf_counter() - self.started

    def write(self, piece: str) -> bool:
        """Count and show a generated piece; True when a stop string or turn marker was hit:
        the reply ends there, and the marker is never shown."""
        self.first_token()
        self.result.generated_tokens += 1
        if self.meter is not None:
            self.meter.add()
        shown, hit = self._scanner.feed(piece)
        if shown:
            self.generation._emit(shown)
        return hit

    @property
    def text(self) -> str:
        """The reply's text so far (cut at a stop string), a held-back tail included."""
        return self._scanner.text

    def fail(self, error: str) -> None:
        """The generation broke: an error, unless it was being cancelled anyway."""
        if self.generation.cancelled:
            self.result.finish = "cancelled"
        else:
            log.error("generation failed", error=error)
            self.result.finish, self.result.error = "error", error

    def close(self) -> None:
        """Show the held-back tail, settle the result, and tell the listener it ended."""
        if tail := self._scanner.flush():
            self.generation._emit(tail)
        self.result.text = self._scanner.text
        self.result.total_s = time.perf_counter() - self.started
        self.generation._done()


def finish_unstarted(generation: Generation, error: str | None) -> None:
    """End a reply that never started: cancelled, or failed with `error`."""
    writer = GenerationWriter(generation)
    if error is None:
        writer.result.finish = "cancelled"
    else:
        writer.fail(error)
    writer.close()
