"""Reading ahead (bot.model.llama_cpp.ahead): while the model is idle, a channel's next prompt is
read as far as it is known, so the next turn reads only what its user wrote. On the real tiny
GGUF, through the engine and through the whole daemon."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.model.llama_cpp import ahead
from bot.model.llama_cpp.engine import Engine
from bot.model.template import ChatText, open_vocab
from bot.model.types import Generation, GenerationRequest
from bot.personas import Sampling
from support.daemons import ask, daemon_for
from support.recording_backend import RecordingBackend
from support.tinymodel import CHAT_TEMPLATE, write_tiny_model

TEMPLATES = {
    "chatml": CHAT_TEMPLATE,
    # Text of the template's glued to the user's: which of its tokens stay depends on what follows.
    "wordy user turns": (
        "{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '<|im_start|>user\\nthe question is:' + m['content'] + '<|im_end|>\\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
        "{% endif %}"
    ),
    # No marker between turns at all: the reply's end and the next turn's start are one text.
    "plain turns": (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
    ),
}
# What a user's next turn may start with.
NEXT = ["hello", " hello", "\nhello", "Hello!", "1 2 3", "(x)", "é", "*bold*", "what?", ""]
SAID = [
    {"role": "system", "content": "You are kind."},
    {"role": "user", "content": "tell me about water"},
    {"role": "assistant", "content": "water is wet and know"},
]


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_opening_is_how_every_next_prompt_starts(tmp_path: Path, name: str) -> None:
    model = write_tiny_model(tmp_path / "m.gguf", chat_template=TEMPLATES[name])
    text = ChatText(open_vocab(model))
    opening = text.opening_tokens(SAID)
    asked = text.prompt_tokens(SAID[:-1])  # the prompt that got the reply
    assert len(opening) > len(asked)  # it holds the reply, and more
    for next_turn in NEXT:
        full = text.prompt_tokens([*SAID, {"role": "user", "content": next_turn}])
        assert full[: len(opening)] == opening, (name, next_turn)


@pytest.fixture
async def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.2)


@pytest.fixture(params=["slots", "pool"])
async def backend(
    request: pytest.FixtureRequest, tiny_model: Path
) -> AsyncIterator[RecordingBackend]:
    loaded = await RecordingBackend.load(
        tiny_model, n_ctx=2048, n_threads=2, parallel=2, kv_layout=request.param
    )
    yield loaded
    await loaded.close()


def engine_of(backend: RecordingBackend) -> Engine:
    assert backend._engine is not None
    return backend._engine


async def reply(backend: RecordingBackend, messages: list[dict[str, str]], key: str) -> Generation:
    request = GenerationRequest(messages, Sampling(max_tokens=12), seed=1, cache_key=key)
    generation = backend.start(request)
    _ = [piece async for piece in generation]
    return generation


async def read(backend: RecordingBackend) -> None:
    """Until nothing is left to read ahead."""
    deadline = time.monotonic() + 30
    while engine_of(backend).ahead.pending:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await backend.ping()


def going_on(messages: list[dict[str, str]], first: Generation) -> list[dict[str, str]]:
    return [*messages, {"role": "assistant", "content": first.result.text.strip()}]


QUESTION = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "hi " * 30}]


async def test_an_idle_channel_reads_its_next_prompt_ahead(
    backend: RecordingBackend, quick: None
) -> None:
    first = await reply(backend, QUESTION, "a")
    assert not backend.quiet()  # something left to read ahead
    await read(backend)
    assert backend.quiet()
    (resident,) = [r for r in engine_of(backend).pool.residents if r.key == "a"]
    # !status says what the KV holds now, the tokens read ahead included.
    assert backend.cache_state("a") == f"warm ({len(resident.tokens):,} tokens resident)"
    said = going_on(QUESTION, first)
    second = await reply(backend, [*said, {"role": "user", "content": "more please"}], "a")
    opening = backend._text.opening_tokens(said)
    result = second.result
    # Everything before the user's words came from the KV: the reply (as the daemon stores
    # it), its close and the next turn's opening; only the words and the answer's opening
    # were read.
    assert result.reused_tokens == len(opening)
    assert result.prompt_tokens - result.reused_tokens <= 12


async def test_a_reply_not_yet_taken_by_the_model_thread_is_not_quiet(
    backend: RecordingBackend,
) -> None:
    held = threading.Event()
    backend._jobs.put(held.wait)  # the model thread is busy with a job
    try:
        request = GenerationRequest(QUESTION, Sampling(max_tokens=2), seed=1, cache_key="a")
        generation = backend.start(request)
        assert not backend.quiet()  # its reply waits in the jobs, not yet in the engine
    finally:
        held.set()
    _ = [piece async for piece in generation]


async def test_reading_ahead_waits_for_a_pause_so_a_turn_at_once_never_waits_for_it(
    backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 3600.0)
    first = await reply(backend, QUESTION, "a")
    (held,) = [r.tokens.copy() for r in engine_of(backend).pool.residents if r.key == "a"]
    said = going_on(QUESTION, first)
    second = await reply(backend, [*said, {"role": "user", "content": "more please"}], "a")
    # Nothing was read between: the KV held what the reply left, not the next turn's opening.
    assert 0 < engine_of(backend).ahead.wait_s() <= 3600  # the second reply's, still waiting
    assert second.result.reused_tokens <= len(held) < len(backend._text.opening_tokens(said))


async def test_a_busy_model_reads_ahead_between_the_steps_of_replies_past_their_prompts(
    backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bot that is never idle still reads its channels' next prompts: between the steps of
    # a reply that is generating (its first token shown), in small steps.
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.0)
    engine = engine_of(backend)
    read_ahead, steps = engine.read_ahead, []

    def recording() -> None:
        steps.append(([s.prefilling for s in engine.streams], bool(engine.waiting)))
        read_ahead()

    monkeypatch.setattr(engine, "read_ahead", recording)
    short = GenerationRequest(QUESTION, Sampling(max_tokens=2), seed=1, cache_key="a")
    long = GenerationRequest(
        QUESTION, Sampling(max_tokens=300), seed=1, cache_key="b", ban_eos=True
    )
    first, other = backend.start(short), backend.start(long)
    _ = [piece async for piece in first]
    _ = [piece async for piece in other]
    assert other.result.finish == "length"
    busy = [prefilling for prefilling, _ in steps if prefilling]
    assert busy, "nothing was read ahead while a reply generated"
    assert not any(any(p) for p in busy)  # never while a reply waited for its first token
    assert not any(waiting for _, waiting in steps)
    said = going_on(QUESTION, first)
    (resident,) = [r for r in engine.pool.residents if r.key == "a"]
    held = first.result.prompt_tokens + first.result.generated_tokens - 1  # the reply left
    assert len(resident.tokens) == len(backend._text.opening_tokens(said)) > held


async def test_a_long_read_ahead_goes_in_small_steps_so_a_new_turn_waits_little(
    backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.3)
    engine = engine_of(backend)
    await reply(backend, QUESTION, "a")
    stored = "water is wet " * 40  # a reply the daemon stores otherwise than it was generated

    def store_otherwise() -> None:
        engine.ahead.pending["a"].messages[-1]["content"] = stored

    await backend._call(store_otherwise)
    batch = engine.shared.batch
    decode, steps = batch.decode, []

    def recording(ctx: object) -> int:
        steps.append(batch.size)
        return decode(ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "decode", recording)
    await read(backend)
    assert sum(steps) > 100  # the stored reply was read again from where it differs
    assert max(steps) <= ahead.MOST_PER_STEP


async def test_what_reading_ahead_costs_goes_to_the_next_reply(
    backend: RecordingBackend, quick: None
) -> None:
    first = await reply(backend, QUESTION, "a")
    await read(backend)
    spent = engine_of(backend).ahead.spent["a"]
    assert spent.model_s > 0 and spent.cpu_s > 0
    said = going_on(QUESTION, first)
    second = await reply(backend, [*said, {"role": "user", "content": "more please"}], "a")
    assert "a" not in engine_of(backend).ahead.spent
    assert second.result.model_s >= spent.model_s


async def test_a_forgotten_channel_is_not_read_ahead(
    backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ahead, "READ_AFTER_S", 0.3)
    await reply(backend, QUESTION, "a")
    await backend.forget("a")
    await asyncio.sleep(0.5)
    await backend.ping()
    engine = engine_of(backend)
    assert not engine.ahead.pending and not engine.ahead.spent
    assert not any(r.key == "a" for r in engine.pool.residents)
    assert backend.cache_state("a") == "cold"


async def test_a_channel_forgotten_while_it_generates_keeps_no_words_to_read_ahead(
    backend: RecordingBackend,
) -> None:
    # Long enough that the forget is honoured while it generates.
    sampling = Sampling(max_tokens=200)
    request = GenerationRequest(QUESTION, sampling, seed=1, cache_key="a", ban_eos=True)
    generation = backend.start(request)
    pieces = aiter(generation)
    await anext(pieces)
    await backend.forget("a")  # e.g. !reset while the answer streams
    _ = [piece async for piece in pieces]
    assert generation.result.finish == "length"
    await backend.ping()  # after the forget's own job
    assert "a" not in engine_of(backend).ahead.pending  # its conversation is held nowhere


async def test_forgetting_drops_what_was_read_ahead(backend: RecordingBackend, quick: None) -> None:
    await reply(backend, QUESTION, "a")
    await read(backend)
    assert "a" in engine_of(backend).ahead.spent
    await backend.forget("a")
    await backend.ping()
    assert "a" not in engine_of(backend).ahead.spent
    assert not any(r.key == "a" for r in engine_of(backend).pool.residents)


async def test_through_the_daemon_a_follow_up_reads_only_what_is_new(
    tmp_path: Path, tiny_model: Path, quick: None
) -> None:
    async with daemon_for(tmp_path, tiny_model, engine_cls=RecordingBackend) as (daemon, adapter):
        backend = daemon.backend
        assert isinstance(backend, RecordingBackend)
        await ask(daemon, adapter, "tell me about the sea, please")
        await read(backend)
        await ask(daemon, adapter, "and the rivers?")
        request = backend.generations[-1].request
        result = backend.generations[-1].result
        known = backend._text.opening_tokens(list(request.messages)[:-1])
        # The daemon's next prompt starts as read ahead: the stored reply, stripped, and the
        # opening of the user's turn.
        assert backend.prompt_tokens(request.messages)[: len(known)] == known
        assert result.reused_tokens == len(known)


@pytest.mark.parametrize(
    ("part", "method"), [("footprint", "before_step"), ("pool", "honour_forgets")]
)
async def test_a_broken_read_ahead_is_not_tried_again(
    backend: RecordingBackend,
    quick: None,
    monkeypatch: pytest.MonkeyPatch,
    part: str,
    method: str,
) -> None:
    engine = engine_of(backend)
    calls = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError(f"{part}.{method} broke")

    first = await reply(backend, QUESTION, "a")
    monkeypatch.setattr(getattr(engine, part), method, broken)
    await read(backend)  # the worker dropped what was pending rather than looping on it
    await asyncio.sleep(0.5)
    assert len(calls) == 1
    monkeypatch.undo()
    said = going_on(QUESTION, first)
    second = await reply(backend, [*said, {"role": "user", "content": "more please"}], "a")
    assert second.result.finish == "length"  # the next turn reads what was not read ahead
    assert 0 < second.result.reused_tokens < len(backend._text.opening_tokens(said))
