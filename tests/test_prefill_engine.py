"""Which prompts the step loop reads first, on real llama.cpp with the tiny GGUF (steps counted,
never timed): the shortest first; whole prompts together, a longer one's chunk after them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from test_batching import TOPICS, ask, chat, load, text_of

from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.engine_steps import StepRecordingBackend


def started_together(
    backend: StepRecordingBackend, requests: list[GenerationRequest]
) -> list[Generation]:
    """Submitted while the model thread waits on a job of ours, so its next step sees all."""
    gate = threading.Event()
    backend._jobs.put(gate.wait)
    generations = [backend.start(r) for r in requests]
    gate.set()
    return generations


async def test_a_short_question_is_read_before_a_long_text_admitted_first(
    tiny_model: Path,
) -> None:
    backend = await load(tiny_model, parallel=2, n_batch=64)
    try:
        quick = Sampling(temperature=0, max_tokens=4)
        asked = [ask(chat("fire", turns=12), "long"), ask(chat("tea", turns=0), "short", quick)]
        long, short = started_together(backend, asked)
        await asyncio.gather(text_of(long), text_of(short))
        await backend.ping()
        steps = list(backend.step_log.steps)
    finally:
        await backend.close()
    reading_long = [i for i, s in enumerate(steps) if s.prompt(long)]
    reading_short = [i for i, s in enumerate(steps) if s.prompt(short)]
    assert long.result.prompt_tokens > 10 * 64  # ten chunks and more
    # The short prompt is read whole in the first step, alone; the long one's chunks follow.
    assert reading_short == [0]
    assert steps[0].prompt(short) == short.result.prompt_tokens
    assert not steps[0].prompt(long)
    assert len(reading_long) >= 10 and reading_long[0] == 1
    assert short.result.finish == "length"


async def test_a_burst_of_prompts_that_fit_shares_one_step(tiny_model: Path) -> None:
    # As llama-server reads them (three of ~160 tokens fit a step's 508).
    backend = await load(tiny_model, parallel=4)
    try:
        requests = [ask(chat(topic), topic) for topic in TOPICS[:3]]
        generations = started_together(backend, requests)
        await asyncio.gather(*(text_of(g) for g in generations))
        await backend.ping()
        first = backend.step_log.steps[0]
    finally:
        await backend.close()
    assert all(first.prompt(g) == g.result.prompt_tokens for g in generations)
