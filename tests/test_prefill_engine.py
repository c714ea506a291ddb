"""Which prompts the step loop reads first, on real llama.cpp with the tiny GGUF (steps counted,
never timed): the shortest first, and one per step where the step cost says rows dominate."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from test_batching import TOPICS, alone, ask, chat, load, text_of

from bot.model.llama_cpp.prefill import StepCost
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
    # The short prompt is read whole in one step, while most of the long one is still to come.
    assert len(reading_short) == 1
    assert steps[reading_short[0]].prompt(short) == short.result.prompt_tokens
    assert reading_short == [0]
    assert sum(i > reading_short[0] for i in reading_long) >= 9
    assert short.result.finish == "length"


def rows_dominate() -> StepCost:
    """What the bench model on 2 cores measures: 25 ms a row, 50 ms a step (held for a test
    that lasts a few steps: 200 such steps outweigh the tiny model's own)."""
    cost = StepCost()
    for _ in range(50):
        for rows in (1, 4, 31, 508):
            cost.add(rows, 0.05 + 0.025 * rows)
    return cost


async def test_where_rows_dominate_a_burst_of_prompts_is_read_one_per_step(
    tiny_model: Path,
) -> None:
    backend = await load(tiny_model, parallel=4)
    try:
        engine = backend._engine
        assert engine is not None
        engine.step_cost = rows_dominate()
        requests = [ask(chat(topic), topic) for topic in TOPICS[:4]]
        generations = started_together(backend, requests)
        texts = await asyncio.gather(*(text_of(g) for g in generations))
        await backend.ping()
        steps = list(backend.step_log.steps)
    finally:
        await backend.close()
    # Each step read at most one prompt, and the four first tokens came in four steps in a row.
    assert all(sum(bool(s.prompt(g)) for g in generations) <= 1 for s in steps)
    firsts = [next(i for i, s in enumerate(steps) if s.generated(g)) for g in generations]
    assert sorted(firsts) == list(range(min(firsts), min(firsts) + 4))
    assert list(texts) == await alone(tiny_model, requests)  # the text is each one's own


async def test_without_a_measured_cost_a_burst_shares_one_step(tiny_model: Path) -> None:
    # No step seen yet (no fit): every prompt that fits joins, as llama-server reads them
    # (three of ~160 tokens fit a step's 508).
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
