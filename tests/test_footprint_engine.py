"""Each reply's footprint from the real step loop (tiny GGUF, real llama.cpp): token counts,
time on the model, and energy shared among concurrent replies, from the CPU-time estimate and
from a fake powercap tree whose counters advance (and wrap) at every step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.model.energy import Estimate, Rapl, Source, package_zones
from bot.model.llama_cpp.engine import Engine
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.engine_steps import Step, StepRecordingBackend
from support.powercap import FakePowercap

SAMPLING = Sampling(temperature=0.0, max_tokens=24)


def ask(topic: str, turns: int) -> GenerationRequest:
    messages = [{"role": "system", "content": f"You talk about {topic}."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"tell me about {topic}, part {i} " * 8})
        messages.append({"role": "assistant", "content": f"{topic} is good, we can help " * 8})
    messages.append({"role": "user", "content": f"and {topic} now?"})
    return GenerationRequest(messages, SAMPLING, seed=3, cache_key=topic, ban_eos=True)


async def drain(generation: Generation) -> None:
    async for _ in generation:
        pass


async def run(backend: StepRecordingBackend, requests: list[GenerationRequest]) -> list[Generation]:
    generations = [backend.start(r) for r in requests]
    await asyncio.gather(*(drain(g) for g in generations))
    await backend.ping()
    return generations


async def load(tiny_model: Path, energy: Source) -> StepRecordingBackend:
    return await StepRecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=4, energy=energy
    )


def total_joules(backend: StepRecordingBackend) -> float:
    assert backend._engine is not None
    return backend._engine.footprint.total_joules


async def test_estimated_energy_follows_each_replys_tokens(tiny_model: Path) -> None:
    backend = await load(tiny_model, Estimate(8.0))
    try:
        # A prompt read in several steps: its time on the model dwarfs one step held up by a
        # busy machine (4 turns, read in two steps, lost to a 20 ms stall in CI).
        long, short = await run(backend, [ask("tea", 10), ask("cats", 0)])
        assert backend.stats().energy_source == "estimated"
        total = total_joules(backend)
    finally:
        await backend.close()
    for g in (long, short):
        result = g.result
        assert result.energy_source == "estimated"
        assert result.energy_j is not None and result.energy_j > 0
        assert 0 < result.model_s <= result.total_s
        assert result.generated_tokens == SAMPLING.max_tokens
        assert result.reused_tokens == 0 and result.prompt_tokens > 0
    assert long.result.prompt_tokens > 3 * short.result.prompt_tokens
    # They generated together; the long prompt's evaluation is the long reply's.
    assert long.result.energy_j > short.result.energy_j  # type: ignore[operator]
    assert long.result.model_s > short.result.model_s
    # Nothing is counted twice or left out: the replies' shares add up to what was given.
    assert long.result.energy_j + short.result.energy_j == pytest.approx(total)  # type: ignore[operator]


async def test_energy_from_a_powercap_tree_whose_counter_wraps(
    tiny_model: Path, tmp_path: Path
) -> None:
    # 0.1 J per step on a counter half a joule before its wrap; the box's other CPUs idle
    # (so all of it is ours).
    tree = FakePowercap(tmp_path, max_range_uj=1_000_000_000)
    tree.advance(999_500_000)
    bumps = 0

    def after_step(engine: Engine, step: Step) -> None:
        nonlocal bumps
        bumps += 1
        tree.advance(100_000)

    backend = await load(tiny_model, Rapl(package_zones(tree.root), tree.proc))
    backend.step_log.after_step = after_step
    try:
        generations = await run(backend, [ask("water", 2), ask("fire", 1), ask("night", 0)])
    finally:
        await backend.close()
    energies = [g.result.energy_j for g in generations]
    assert all(g.result.energy_source == "rapl" for g in generations)
    assert all(e is not None and e > 0 for e in energies)
    total = sum(e for e in energies if e is not None)
    assert bumps > 10 and tree.counters[0] < 999_500_000  # it wrapped
    # Every bump while the replies ran, across the wrap: whole tenths of a joule, none lost
    # but the one after the last step.
    assert total * 10 == pytest.approx(round(total * 10))
    assert (bumps - 1) / 10 <= total + 1e-9 and total <= bumps / 10 + 1e-9
