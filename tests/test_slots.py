"""Several replies at once (issue 14), the daemon's side, with the real engine (tiny GGUF), real
SQLite and the recording adapter: slots handed out fairly, commands that never wait, !reset
and !forget that stop a reply first, and shutdown with several answers in flight.

Today's in-process engine generates the replies in flight one after the other; the daemon
logic tested here is the same whether the engine interleaves them or not.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

from bot import texts
from bot.events import Outcome
from bot.model.llama_cpp import jobs
from bot.model.types import Generation, GenerationRequest
from support.daemons import answered, ask, daemon_for
from support.engine_steps import StepRecordingBackend
from support.persona_files import only_persona
from support.progress import until_progressing
from support.recording_adapter import RecordedReply, message

FOREVER = "go on forever"  # with temperature 0 the tiny model goes on for thousands of tokens


def personas(tmp_path: Path, default_max_tokens: int) -> dict[str, object]:
    """A `short` persona to switch to, and a default one with `default_max_tokens`; both
    greedy, so a reply's length does not depend on the seed."""
    only_persona(tmp_path, "short", max_tokens=16, temperature=0.0)
    return {
        **only_persona(tmp_path, "default", max_tokens=default_max_tokens, temperature=0.0),
        "shutdown_grace_s": 0,  # leaving the test stops what is still generating
    }


async def showing_text(record: RecordedReply) -> None:
    """Until the reply has shown some text (prompt evaluation can take a while on a busy box)."""
    await until_progressing(lambda: record.updates, lambda: record.typing, 60, "the first text")


async def before_it_goes_on(command: Awaitable[str], generation: Generation) -> str:
    """The command's answer, which must come before `generation` has made 200 more tokens
    (a command that waited for it would see it go on)."""
    answer = asyncio.ensure_future(command)
    start = generation.result.generated_tokens
    await until_progressing(
        lambda: answer.done() or generation.result.generated_tokens - start >= 200,
        lambda: generation.result.generated_tokens,
        60,
        "the command's answer",
    )
    assert answer.done(), "the command waited while the reply went on"
    return answer.result()


def generation_in(daemon: object, channel_key: str) -> Generation:
    (generation,) = [g for g in daemon.in_flight if g.request.cache_key == channel_key]  # type: ignore[attr-defined]
    return generation


async def test_a_busy_channel_holds_one_slot_while_the_others_get_the_rest(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Channel A has 20 messages queued, B, C and D three each, and there are four slots:
    A never has two replies at once, and the other channels are served beside it."""
    bot = only_persona(tmp_path, "brief", max_tokens=12, temperature=0.0)
    queue = {"per_user_per_minute": 100}
    async with daemon_for(tmp_path, tiny_model, start=False, slots=4, bot=bot, queue=queue) as (
        daemon,
        adapter,
    ):
        starts: list[tuple[str, list[str], int]] = []  # (channel, others generating, busy)
        engine_start = daemon.backend.start

        def watched_start(request: GenerationRequest) -> Generation:
            running = [g.request.cache_key or "" for g in daemon.in_flight]
            starts.append((request.cache_key or "", running, daemon.status().answering))
            return engine_start(request)

        daemon.backend.start = watched_start  # type: ignore[method-assign]
        msgs = [message(f"a{i}", channel="A") for i in range(20)]
        msgs += [message(f"{c}{i}", channel=c) for c in "BCD" for i in range(3)]
        for msg in msgs:
            assert await daemon.handle(msg) is Outcome.ACCEPTED
        daemon.responder.start()  # everything is queued before the first slot is handed out
        await until_progressing(
            lambda: all(r.done.is_set() for r in adapter.replies),
            lambda: sum(r.done.is_set() for r in adapter.replies),
            60,
            "all answers",
        )
        await daemon.wait_idle()
        assert all(r.final is not None for r in adapter.replies)
        assert sorted(r.message.message_id for r in adapter.replies) == sorted(
            m.message_id for m in msgs
        )
        assert await daemon.store.pending() == []

    channels = [channel for channel, _, _ in starts]
    assert len(channels) == len(msgs)
    for channel, running, busy in starts:
        assert channel not in running  # one reply per channel at a time
        assert busy <= 4
    assert set(channels[:4]) == {"test:A", "test:B", "test:C", "test:D"}
    assert max(len(running) for _, running, _ in starts) == 3  # all four slots in use
    # B, C and D never waited behind A's backlog: all theirs started before A's fourth.
    fourth_of_a = [i for i, channel in enumerate(channels) if channel == "test:A"][3]
    assert max(i for i, channel in enumerate(channels) if channel != "test:A") < fourth_of_a


async def test_commands_never_wait_for_a_generation(tmp_path: Path, tiny_model: Path) -> None:
    bot = personas(tmp_path, default_max_tokens=8000)
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, slots=2, bot=bot) as (
        daemon,
        adapter,
    ):
        msg = message(FOREVER)
        await daemon.handle(msg)
        (record,) = adapter.for_message(msg.message_id)
        await showing_text(record)
        generation = generation_in(daemon, msg.channel_key)
        status = await before_it_goes_on(ask(daemon, adapter, "!status"), generation)
        # With the engine's speed when it has one: "busy (1,234.5 tokens/s); 0 waiting".
        assert re.search(r"Replying: 1 of 2 slots busy( \([\d.,]+ tokens/s\))?; 0 waiting", status)
        for command in ("!help", "!seed", "!temperature", "!persona"):
            assert await before_it_goes_on(ask(daemon, adapter, command, channel="c2"), generation)
        assert not record.done.is_set()  # all answered while the reply is being generated


async def test_reset_on_a_generating_channel_stops_that_reply_first(
    tmp_path: Path, tiny_model: Path
) -> None:
    """!reset used to delete the history around a reply still being generated (and wait
    for it behind the model): the reply then stored itself into the reset channel."""
    bot = personas(tmp_path, default_max_tokens=8000)
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, slots=2, bot=bot) as (
        daemon,
        adapter,
    ):
        await ask(daemon, adapter, "!persona short", channel="c2", admin=True)
        here, there = message(FOREVER, channel="c1"), message("hello there", channel="c2")
        await daemon.handle(here)
        (record,) = adapter.for_message(here.message_id)
        await showing_text(record)
        await daemon.handle(there)
        generation = generation_in(daemon, here.channel_key)

        reset = await before_it_goes_on(ask(daemon, adapter, "!reset", channel="c1"), generation)

        assert record.done.is_set()  # ended before the reset was answered
        assert generation.result.finish == "cancelled"
        assert record.final is not None and texts.NOTE_STOPPED in record.final
        assert reset == texts.RESET_DONE.format(count=2)  # the question and its stopped answer
        assert await daemon.store.history(here.channel_key) == []
        # The other channel's reply was not disturbed.
        (other,) = adapter.for_message(there.message_id)
        assert texts.NOTE_STOPPED not in await answered(other)
        await daemon.wait_idle()
        assert await daemon.store.pending() == []


async def test_forget_stops_the_answers_to_the_forgotten_first(
    tmp_path: Path, tiny_model: Path
) -> None:
    """!forget used to let a reply to the forgotten person's message run to its end (and
    wait behind it) before the model forgot; now that reply is stopped and never stored."""
    bot = personas(tmp_path, default_max_tokens=8000)
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, slots=2, bot=bot) as (
        daemon,
        adapter,
    ):
        msg = message(FOREVER, channel="c1", author="u1")
        await daemon.handle(msg)
        (record,) = adapter.for_message(msg.message_id)
        await showing_text(record)
        generation = generation_in(daemon, msg.channel_key)

        done = await before_it_goes_on(
            ask(daemon, adapter, "!forget", channel="c2", author="u1"), generation
        )

        assert done == texts.FORGET_DONE.format(count=1, who="you")
        assert record.done.is_set() and generation.result.finish == "cancelled"
        assert record.failed == texts.CANCELLED  # not stored: the question is gone
        assert await daemon.store.history(msg.channel_key) == []
        assert await daemon.store.pending() == []


async def test_shutdown_keeps_every_answer_in_flight_pending_and_answers_each_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    bot = personas(tmp_path, default_max_tokens=8000)
    msgs = [message(f"{FOREVER} {i}", channel=f"c{i}") for i in range(3)]
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, slots=3, bot=bot) as (
        daemon,
        adapter,
    ):
        for msg in msgs:
            assert await daemon.handle(msg) is Outcome.ACCEPTED
        first = adapter.for_message(msgs[0].message_id)[0]
        await showing_text(first)
        # On a busy box the first may show text before the dispatcher has handed out the third.
        await until_progressing(
            lambda: daemon.status().answering == 3, lambda: len(first.updates), 60, "three answers"
        )
        await daemon.stop(grace=0.2)
        assert [r.failed for r in adapter.replies] == [texts.SHUTTING_DOWN] * 3
        pending = sorted(p.message.message_id for p in await daemon.store.pending())
        assert pending == sorted(m.message_id for m in msgs)
    # Restart: each one is answered exactly once.
    brief = only_persona(tmp_path, "brief", max_tokens=16, temperature=0.0)
    async with daemon_for(tmp_path, tiny_model, slots=3, bot=brief) as (daemon, adapter):
        await daemon.wait_idle()
        assert sorted(r.message.message_id for r in adapter.replies if r.final) == sorted(
            m.message_id for m in msgs
        )
        assert len(adapter.replies) == 3
        assert await daemon.store.pending() == []
    async with daemon_for(tmp_path, tiny_model, slots=3, bot=brief) as (daemon, adapter):
        await daemon.wait_idle()
        assert adapter.replies == []


async def test_the_grace_period_lets_every_answer_in_flight_finish(
    tmp_path: Path, tiny_model: Path
) -> None:
    bot = only_persona(tmp_path, "medium", max_tokens=64, temperature=0.0)
    msgs = [message(f"tell me a story {i}", channel=f"c{i}") for i in range(3)]
    async with daemon_for(tmp_path, tiny_model, start=False, slots=3, bot=bot) as (
        daemon,
        adapter,
    ):
        for msg in msgs:
            assert await daemon.handle(msg) is Outcome.ACCEPTED
        daemon.responder.start()
        await asyncio.sleep(0)  # the three slots are handed out at once
        assert daemon.status().answering == 3
        await daemon.stop(grace=300)
        assert all(r.final is not None and r.failed is None for r in adapter.replies)
        assert len(adapter.replies) == 3
        assert await daemon.store.pending() == []


async def test_forget_leaves_someone_else_s_answer_in_its_channel_alone(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Found by the property test (tests/test_interleavings.py): Bob's `!forget` of his own
    words, given in the channel where an answer to Alice was being written, stopped her
    answer ("stopped on request"): someone else's action cut it. Only the answers to the
    forgotten person are stopped; the channel's cached state is dropped once hers ends."""
    bot = personas(tmp_path, default_max_tokens=8000)
    async with daemon_for(tmp_path, tiny_model, n_ctx=8192, slots=2, bot=bot) as (
        daemon,
        adapter,
    ):
        alice = message(FOREVER, channel="c1", author="u1")
        await daemon.handle(alice)
        (record,) = adapter.for_message(alice.message_id)
        await showing_text(record)
        generation = generation_in(daemon, alice.channel_key)

        done = await before_it_goes_on(
            ask(daemon, adapter, "!forget", channel="c1", author="u2", name="Bob"), generation
        )

        assert done == texts.FORGET_DONE.format(count=0, who="you")
        start = generation.result.generated_tokens
        await until_progressing(
            lambda: generation.result.generated_tokens > start or record.done.is_set(),
            lambda: generation.result.generated_tokens,
            60,
            "her answer to go on",
        )
        assert not record.done.is_set(), record.final  # still being written, not stopped


async def test_replies_handed_out_together_are_read_in_one_step(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon builds the prompts of replies handed out together one after another; an
    idle model thread waits for all of them (jobs.GATHER_S at most, here long enough never
    to run out) instead of reading the first alone and the rest a step later."""
    monkeypatch.setattr(jobs, "GATHER_S", 60.0)
    bot = only_persona(tmp_path, "brief", max_tokens=4, temperature=0.0)
    msgs = [message(f"tell me about boats {i}", channel=f"c{i}") for i in range(3)]
    async with daemon_for(
        tmp_path, tiny_model, start=False, slots=3, bot=bot, engine_cls=StepRecordingBackend
    ) as (daemon, adapter):
        for msg in msgs:
            assert await daemon.handle(msg) is Outcome.ACCEPTED
        daemon.responder.start()
        await daemon.wait_idle()
        assert all(r.final is not None for r in adapter.replies)
        steps = daemon.backend.step_log.steps  # type: ignore[attr-defined]
        first = next(step for step in steps if step.prompt_total)
        assert len(first.tokens) == 3  # each reply's prompt, read whole
        # A reply that comes alone is not held: nothing else is being prepared.
        started = time.monotonic()
        alone = message("and cars?", channel="c9")
        assert await daemon.handle(alone) is Outcome.ACCEPTED
        (record,) = adapter.for_message(alone.message_id)
        assert await answered(record)
        assert time.monotonic() - started < 30  # not held for GATHER_S
