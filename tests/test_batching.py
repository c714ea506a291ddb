"""Continuous batching in the in-process backend, on real llama.cpp with the tiny GGUF: several
replies generate in one step loop, each as if alone; steps are counted, never timed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import llama_cpp
import pytest

from bot.model.llama_cpp.engine import Engine
from bot.model.llama_cpp.pieces import ALIGN, MIN_PIECE, cuts, reuse_point
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.engine_steps import Step, StepRecordingBackend

GREEDY = Sampling(temperature=0.0, max_tokens=40)
TOPICS = ("water", "fire", "cats", "tea", "books", "night")


def chat(topic: str, turns: int = 1) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": f"You talk about {topic}."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"tell me about {topic}, part {i} " * 6})
        messages.append({"role": "assistant", "content": f"{topic} is good, we can help " * 6})
    messages.append({"role": "user", "content": f"and {topic} now?"})
    return messages


def ask(
    messages: list[dict[str, str]],
    key: str | None,
    sampling: Sampling = GREEDY,
    **extra: object,
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages,
        sampling=sampling,
        seed=7,
        cache_key=key,
        ban_eos=True,
        **extra,  # type: ignore[arg-type]
    )


async def text_of(generation: Generation) -> str:
    return "".join([delta async for delta in generation])


async def load(tiny_model: Path, **options: object) -> StepRecordingBackend:
    options = {"n_ctx": 2048, "n_threads": 2, "kv_cache_mb": 16, **options}
    return await StepRecordingBackend.load(tiny_model, **options)  # type: ignore[arg-type]


@pytest.fixture
async def backend(tiny_model: Path) -> AsyncIterator[StepRecordingBackend]:
    loaded = await load(tiny_model, parallel=4)
    yield loaded
    await loaded.close()


@pytest.fixture
async def slots(tiny_model: Path) -> AsyncIterator[StepRecordingBackend]:
    """Slots, the daemon's default, where texts are compared with texts alone: in a pool a
    reply's cells lie where others left room, the attention sums in another order, and on AVX2
    the tiny model's near ties then tip (docs/performance.md)."""
    loaded = await load(tiny_model, parallel=4, kv_layout="slots")
    yield loaded
    await loaded.close()


async def pool_agrees(backend: StepRecordingBackend) -> bool:
    """Whether llama.cpp's KV cache holds exactly the positions the pool's bookkeeping says,
    sequence by sequence (asked on the model thread)."""

    def check() -> bool:
        engine, loaded = backend._engine, backend._loaded
        assert engine is not None and loaded is not None
        return all(
            llama_cpp.llama_memory_seq_pos_max(loaded.memory, r.seq) + 1 == len(r.tokens)
            for r in engine.pool.residents
        )

    return bool(await backend._call(check))


async def alone(tiny_model: Path, requests: list[GenerationRequest]) -> list[str]:
    """Each request's text on a fresh backend, one at a time."""
    fresh = await load(tiny_model, parallel=1)
    try:
        return [await text_of(fresh.start(r)) for r in requests]
    finally:
        await fresh.close()


@pytest.mark.parametrize("layout", ["slots", "pool"])
async def test_replies_generated_together_are_the_replies_generated_alone(
    layout: str, tiny_model: Path
) -> None:
    backend = await load(tiny_model, parallel=4, kv_layout=layout)
    try:
        requests = [ask(chat(topic), topic) for topic in TOPICS[:4]]
        generations = [backend.start(r) for r in requests]
        together = await asyncio.gather(*(text_of(g) for g in generations))
        await backend.ping()  # the step that ended them is recorded by now
        assert all(g.result.finish == "length" for g in generations)
        assert await pool_agrees(backend)
        # They really shared steps: most steps decoded a token of each of the four.
        steps = backend.step_log.steps
        full = [s for s in steps if sum(s.generated(g) for g in generations) == 4]
        assert len(full) >= GREEDY.max_tokens - 2
        assert backend.stats().steps == len(steps)
    finally:
        await backend.close()
    if layout == "slots":  # the pool's texts hang on where its cells lie (the fixture `slots`)
        assert list(together) == await alone(tiny_model, requests)


async def test_more_replies_than_slots_wait_their_turn(tiny_model: Path) -> None:
    # Slots, the daemon's default: a pool gives a reply whose cells lie elsewhere another
    # summation order, and on AVX2 the tiny model's near ties then tip (docs/performance.md).
    backend = await load(tiny_model, parallel=2, kv_layout="slots")
    try:
        requests = [ask(chat(topic), topic) for topic in TOPICS[:5]]
        generations = [backend.start(r) for r in requests]
        texts = await asyncio.gather(*(text_of(g) for g in generations))
        await backend.ping()
        steps = backend.step_log.steps
    finally:
        await backend.close()
    assert max(sum(s.holds(g) for g in generations) for s in steps) == 2
    assert list(texts) == await alone(tiny_model, requests)


async def test_cancelling_one_reply_leaves_the_others_intact(
    slots: StepRecordingBackend, tiny_model: Path
) -> None:
    backend = slots
    requests = [ask(chat(topic), topic) for topic in TOPICS[:3]]
    generations = [backend.start(r) for r in requests]
    victim = generations[1]

    def stop_the_second(_engine: Engine, _step: Step) -> None:
        if victim.result.generated_tokens >= 5:
            victim.cancel()

    backend.step_log.after_step = stop_the_second
    texts = await asyncio.gather(*(text_of(g) for g in generations))
    expected = await alone(tiny_model, requests)
    assert victim.result.finish == "cancelled"
    assert 5 <= victim.result.generated_tokens < GREEDY.max_tokens
    assert await pool_agrees(backend)  # the cancelled reply's sequence is whole too
    assert expected[1].startswith(texts[1])
    assert [texts[0], texts[2]] == [expected[0], expected[2]]
    assert [generations[0].result.finish, generations[2].result.finish] == ["length"] * 2


async def test_a_long_prompt_delays_the_others_by_one_chunk_at_most(tiny_model: Path) -> None:
    chunk_steps = 64  # n_batch: a step holds every reply's next token and ≤ 62 prompt tokens
    backend = await load(tiny_model, parallel=2, n_batch=chunk_steps)
    try:
        streaming = backend.start(ask(chat("water"), "a", Sampling(temperature=0, max_tokens=300)))
        deltas = aiter(streaming)
        await anext(deltas)  # streaming now
        long = backend.start(ask(chat("fire", turns=12), "b"))
        long_text, _ = await asyncio.gather(text_of(long), _drain(deltas))
        await backend.ping()
        steps = list(backend.step_log.steps)
    finally:
        await backend.close()
    prompt = long.result.prompt_tokens
    assert prompt > 10 * chunk_steps
    evaluating = [s for s in steps if s.prompt(long)]
    assert len(evaluating) >= prompt // (chunk_steps - 2)
    # Every step that evaluated part of the long prompt also gave the stream its next token.
    assert all(s.generated(streaming) == 1 for s in evaluating)
    assert all(s.prompt_total <= chunk_steps - 2 for s in steps)
    assert streaming.result.generated_tokens == 300 and long_text


async def _drain(deltas: AsyncIterator[str]) -> None:
    async for _ in deltas:
        pass


async def test_a_fixed_seed_gives_the_same_reply_alone_together_warm_and_cold(
    backend: StepRecordingBackend,
) -> None:
    seeded = Sampling(temperature=0.8, max_tokens=30, seed=99)
    history = chat("tea", turns=3)

    def fixed() -> GenerationRequest:
        return GenerationRequest(
            messages=history, sampling=seeded, seed=99, cache_key="t", cold=True, ban_eos=True
        )

    first = backend.start(fixed())
    cold = await text_of(first)  # alone, the channel cold
    others = [backend.start(ask(chat(topic), topic)) for topic in TOPICS[:3]]
    second = backend.start(fixed())  # its channel warm now, three others generating
    together, *_ = await asyncio.gather(text_of(second), *(text_of(g) for g in others))
    await backend.ping()
    assert together == cold
    steps = backend.step_log.steps
    # It decoded alone, in a context of its own: where its cells lie never depends on others.
    assert all(len(s.tokens) == 1 and s.fixed_seed_lane for s in steps if s.holds(second))
    assert not any(s.fixed_seed_lane for s in steps if any(s.holds(g) for g in others))
    # ... taking turns with the others' shared steps.
    mine = [i for i, s in enumerate(steps) if s.holds(second)]
    theirs = [i for i, s in enumerate(steps) if any(s.holds(g) for g in others)]
    assert mine[0] < theirs[-1] and theirs[0] < mine[-1]


async def test_more_channels_resident_than_slots_then_evicted_and_back(tiny_model: Path) -> None:
    # Idle channels may stay in the pool here: this is residency, not parking (test_parking).
    backend = await load(tiny_model, parallel=1, resident=3, pool_tokens=4096, idle_cells=10**6)
    try:
        channels = [chat(topic, turns=4) for topic in TOPICS[:5]]
        for topic, messages in zip(TOPICS[:4], channels, strict=False):
            await text_of(backend.start(ask(messages, topic)))
        await backend.ping()
        assert backend.stats().resident == 4  # four channels, one slot
        assert all(backend.cache_state(t).endswith("resident)") for t in TOPICS[:4])
        await text_of(backend.start(ask(channels[4], TOPICS[4])))  # a fifth evicts the oldest
        assert backend.cache_state(TOPICS[0]).endswith("MB)")  # saved as a snapshot
        assert TOPICS[0] in backend._cache
        follow_up = [*channels[0], {"role": "assistant", "content": "ok"}]
        follow_up.append({"role": "user", "content": "go on"})
        back = backend.start(ask(follow_up, TOPICS[0]))
        text = await text_of(back)
        assert back.result.reused_tokens >= len(backend.prompt_tokens(channels[0])) - 1
        assert await pool_agrees(backend)
    finally:
        await backend.close()
    assert [text] == await alone(tiny_model, [ask(follow_up, TOPICS[0])])


async def test_running_out_of_kv_room_mid_step_evicts_an_idle_channel(tiny_model: Path) -> None:
    # Room for one full window and a bit: two idle channels fill it, a third needs their room.
    backend = await load(tiny_model, n_ctx=1024, pool_tokens=1536, parallel=2, idle_cells=10**6)
    try:
        # a is read first (its prompt is no longer: bot.model.llama_cpp.prefill), so it is idle
        # longer.
        a, b, c = chat("fire", turns=4), chat("water", turns=4), chat("cats", turns=6)
        first = [backend.start(ask(a, "a")), backend.start(ask(b, "b"))]
        await asyncio.gather(*(text_of(g) for g in first))
        await backend.ping()
        assert backend.stats().resident == 2
        generation = backend.start(ask(c, "c"))
        text = await text_of(generation)
        cells = [g.result.prompt_tokens + g.result.generated_tokens for g in (*first, generation)]
        assert sum(cells) > 1536  # the three do not fit together
        assert generation.result.finish == "length"
        assert "a" in backend._cache  # the least recently used one was saved, then dropped
        assert backend.cache_state("b").endswith("resident)")
        assert await pool_agrees(backend)
    finally:
        await backend.close()
    assert [text] == await alone(tiny_model, [ask(c, "c")])


async def test_slots_give_each_reply_a_window_of_its_own(tiny_model: Path) -> None:
    # Two replies that together need more cells than one window generate at once, each in its
    # slot's window; idle ones stay there (never parked) until a third channel needs a slot.
    backend = await load(tiny_model, n_ctx=1024, parallel=2, kv_layout="slots")
    try:
        loaded = backend._loaded
        assert loaded is not None
        assert llama_cpp.llama_n_ctx_seq(loaded.ctx.ctx) == 1024  # a window each, not a pool
        a, b, c = chat("water", turns=5), chat("fire", turns=6), chat("cats", turns=2)  # a first
        first = [backend.start(ask(a, "a")), backend.start(ask(b, "b"))]
        together = await asyncio.gather(*(text_of(g) for g in first))
        await backend.ping()
        cells = [g.result.prompt_tokens + g.result.generated_tokens for g in first]
        assert sum(cells) > 1024 and max(cells) <= 1024, cells
        assert max(sum(s.holds(g) for g in first) for s in backend.step_log.steps) == 2
        assert all(g.result.finish == "length" for g in first)
        assert backend.stats().resident == 2
        assert await pool_agrees(backend)
        await text_of(backend.start(ask(c, "c")))  # a third takes the older idle slot
        assert "a" in backend._cache and backend.cache_state("b").endswith("resident)")
        follow_up = [*a, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "?"}]
        back = backend.start(ask(follow_up, "a"))  # back from its snapshot
        await text_of(back)
        assert back.result.reused_tokens >= len(backend.prompt_tokens(a)) - 1
        assert await pool_agrees(backend)
    finally:
        await backend.close()
    assert list(together) == await alone(tiny_model, [ask(a, "a"), ask(b, "b")])


async def test_a_step_of_the_slots_is_one_graph_whatever_order_replies_came_in(
    tiny_model: Path,
) -> None:
    # With a window per slot, llama.cpp computes a step's sequences as one graph only when the
    # batch lists them in increasing, consecutive sequence ids: the channels here hold
    # sequences 0-3 and ask again last to first.
    backend = await load(tiny_model, parallel=4, kv_layout="slots")
    try:
        channels = [chat(topic) for topic in TOPICS[:4]]
        for topic, messages in zip(TOPICS, channels, strict=False):
            await text_of(backend.start(ask(messages, topic)))  # alone: one sequence a step
        await backend.ping()
        alone = [
            s.graph_nodes
            for s in backend.step_log.steps
            if sum(drawn for drawn, _ in s.tokens.values()) == 1
        ]
        assert alone and min(alone) == max(alone) > 0
        backend.step_log.steps.clear()
        follow_ups = [
            [*m, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]
            for m in channels
        ]
        generations = [
            backend.start(ask(m, t))
            for t, m in reversed(list(zip(TOPICS, follow_ups, strict=False)))
        ]
        await asyncio.gather(*(text_of(g) for g in generations))
        await backend.ping()
        four = [s for s in backend.step_log.steps if sum(s.generated(g) for g in generations) == 4]
        assert len(four) >= GREEDY.max_tokens - 2
        assert max(s.graph_nodes for s in four) < 1.5 * alone[0], (
            alone[0],
            [s.graph_nodes for s in four[:3]],
        )
    finally:
        await backend.close()


async def test_forget_status_and_ping_never_wait_for_a_generation(
    backend: StepRecordingBackend,
) -> None:
    first = backend.start(ask(chat("night"), "n"))
    await text_of(first)
    long = backend.start(ask(chat("night", turns=2), "n", Sampling(temperature=0, max_tokens=1500)))
    deltas = aiter(long)
    await anext(deltas)
    await backend.forget("n")
    assert backend.cache_state("n") == "cold"
    await backend.ping()
    await backend.forget()
    assert long.result.generated_tokens < 1500  # all of that while it generated
    long.cancel()
    await _drain(deltas)
    assert backend.cache_state("n") == "cold"  # its sequence was dropped when it ended
    again = backend.start(ask(chat("night", turns=2), "n"))
    await text_of(again)
    assert again.result.reused_tokens == 0


async def test_a_request_that_cannot_start_fails_alone(
    backend: StepRecordingBackend, tiny_model: Path
) -> None:
    running = backend.start(ask(chat("water"), "a"))
    too_long = backend.start(ask([{"role": "user", "content": "water " * 3000}], "b"))
    empty = backend.start(GenerationRequest(messages=(), sampling=GREEDY, seed=1, prompt=()))
    texts = await asyncio.gather(text_of(running), text_of(too_long), text_of(empty))
    assert (too_long.result.finish, empty.result.finish) == ("error", "error")
    assert "does not fit n_ctx" in (too_long.result.error or "")
    assert texts[1:] == ["", ""]
    assert [texts[0]] == await alone(tiny_model, [ask(chat("water"), "a")])


async def test_closing_ends_every_reply_in_flight(tiny_model: Path) -> None:
    backend = await load(tiny_model, parallel=3)
    sampling = Sampling(temperature=0, max_tokens=1500)
    generations = [backend.start(ask(chat(t), t, sampling)) for t in TOPICS[:4]]
    await anext(aiter(generations[0]))
    await backend.close()
    texts = await asyncio.gather(*(text_of(g) for g in generations))
    assert all(g.result.finish == "cancelled" for g in generations)
    assert texts[3] == ""  # the fourth was still waiting for a slot


async def test_a_fixed_seed_channel_reuses_its_prompt_and_still_gives_the_cold_reply(
    backend: StepRecordingBackend, tiny_model: Path
) -> None:
    seeded = Sampling(temperature=0.8, max_tokens=30, seed=5)

    def fixed(messages: list[dict[str, str]]) -> GenerationRequest:
        return GenerationRequest(
            messages=messages, sampling=seeded, seed=5, cache_key="t", cold=True, ban_eos=True
        )

    history = chat("tea", turns=3)
    first = backend.start(fixed(history))
    reply = await text_of(first)
    follow_up = [*history, {"role": "assistant", "content": reply}]
    follow_up.append({"role": "user", "content": "and the water for it?"})
    others = [backend.start(ask(chat(topic), topic)) for topic in TOPICS[:2]]
    second = backend.start(fixed(follow_up))
    warm, *_ = await asyncio.gather(text_of(second), *(text_of(g) for g in others))
    assert backend._engine is not None and backend._engine.solo is not None
    assert backend._engine.solo.reuses  # the probe found the rule holds on the tiny model
    # It kept its previous prompt (short of the last batch), not the reply.
    assert first.result.prompt_tokens - MIN_PIECE - ALIGN < second.result.reused_tokens
    assert second.result.reused_tokens <= first.result.prompt_tokens
    assert [warm] == await alone(tiny_model, [fixed(follow_up)])  # evaluated cold there


@pytest.mark.parametrize(
    ("start", "end", "step", "ends"),
    [
        (0, 100, 512, [100]),
        (0, 20, 512, [20]),  # shorter than a batch's minimum: one batch
        (0, 1024, 512, [512, 1024]),
        (0, 1030, 512, [512, 992, 1030]),  # the last batch gets its 36 tokens
        (0, 1100, 512, [512, 1024, 1100]),
        (8, 700, 512, [520, 700]),
        (0, 610, 100, [100, 200, 300, 400, 500, 572, 610]),
    ],
)
def test_cuts(start: int, end: int, step: int, ends: list[int]) -> None:
    assert cuts(start, end, step) == ends
    pieces = list(itertools.pairwise([start, *ends]))
    assert all(b % ALIGN == 0 for _, b in pieces[:-1])
    assert all(MIN_PIECE <= b - a <= step for a, b in pieces) or len(pieces) == 1


@pytest.mark.parametrize(
    ("kept", "end", "point"),
    [
        (0, 500, 0),
        (400, 500, 400),
        (403, 500, 400),  # a multiple of 4
        (490, 500, 464),  # leaves 36 tokens to evaluate
        (600, 500, 464),
        (30, 40, 4),
        (30, 30, 0),
    ],
)
def test_reuse_point(kept: int, end: int, point: int) -> None:
    assert reuse_point(kept, end) == point
