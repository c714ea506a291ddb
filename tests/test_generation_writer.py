"""What both backends do with generated text (bot.model.writer) and the stop-string scan
under it: pure, table-driven, no model."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from bot.model.types import Generation, GenerationRequest, Outbox, StopScanner
from bot.model.writer import GenerationWriter, Throughput
from bot.personas import Sampling


def generation(stop: tuple[str, ...] = ()) -> Generation:
    request = GenerationRequest(messages=[], sampling=Sampling(), seed=77, stop=stop)
    return Generation(request, asyncio.get_running_loop())


@pytest.mark.parametrize(
    ("stop", "pieces", "text", "written", "hit"),
    [
        ((), ["Hel", "lo"], "Hello", 2, False),
        # Another speaker's turn: a template's marker ends the reply, split or not.
        ((), ["Hi", " there<|im_st", "art|>user"], "Hi there", 3, True),
        ((), ["ok<|im_end|>"], "ok", 1, True),
        (("\nBob:",), ["a", "\nBo", "b: hi"], "a", 3, True),
        # A held-back tail that turns out not to be a stop string is shown at the end.
        (("\nBob:",), ["a", "\nBo"], "a\nBo", 2, False),
    ],
)
async def test_writer_shows_what_the_result_says(
    stop: tuple[str, ...], pieces: list[str], text: str, written: int, hit: bool
) -> None:
    gen = generation(stop)
    writer = GenerationWriter(gen)
    hits = []
    for piece in pieces:
        hits.append(writer.write(piece))
        if hits[-1]:
            break
    writer.close()
    deltas = [d async for d in gen]
    result = gen.result
    assert ("".join(deltas), result.text, result.generated_tokens) == (text, text, written)
    assert any(hits) is hit
    assert result.seed == 77
    assert result.first_token_s is not None and 0 <= result.first_token_s <= result.total_s


async def test_first_token_is_timed_once_also_without_text() -> None:
    gen = generation()
    writer = GenerationWriter(gen)
    writer.first_token()  # e.g. an end-of-generation token: timed, not written
    first = gen.result.first_token_s
    await asyncio.sleep(0.01)
    writer.write("x")
    writer.close()
    assert first is not None and gen.result.first_token_s == first
    assert gen.result.generated_tokens == 1


@pytest.mark.parametrize(
    ("cancelled", "finish", "error", "logged"),
    [(False, "error", "boom", ["generation failed"]), (True, "cancelled", None, [])],
)
async def test_a_failure_is_an_error_unless_cancelled(
    cancelled: bool, finish: str, error: str | None, logged: list[str]
) -> None:
    gen = generation()
    writer = GenerationWriter(gen)
    writer.write("partial")
    if cancelled:
        gen.cancel()
    with capture_logs() as logs:
        writer.fail("boom")
    writer.close()
    deltas = [d async for d in gen]
    assert (gen.result.finish, gen.result.error) == (finish, error)
    assert [e["event"] for e in logs] == logged
    assert "".join(deltas) == gen.result.text == "partial"  # what was shown stays the text


@pytest.mark.parametrize(
    ("stops", "pieces", "shown", "text", "hit"),
    [
        ((), ["ab", "c"], "abc", "abc", False),
        (("\nBob:",), ["hi", "\nBo", "b: yo"], "hi", "hi", True),
        (("\nBob:",), ["hi", "\nBo", "ok"], "hi\nBook", "hi\nBook", False),
        (("<|im_start|>",), ["x<|im_", "start|>user"], "x", "x", True),
        (("END",), ["aEN", "D tail"], "a", "a", True),
        (("END", "STOP"), ["xSTO", "P"], "x", "x", True),
        (("END",), ["aE", "x"], "aEx", "aEx", False),
        (("END",), ["EEN", "x"], "EENx", "EENx", False),
        (("X",), ["aX"], "a", "a", True),
    ],
)
def test_stop_scanner(
    stops: tuple[str, ...], pieces: list[str], shown: str, text: str, hit: bool
) -> None:
    scanner = StopScanner(stops)
    out, stopped = "", False
    for piece in pieces:
        part, stopped = scanner.feed(piece)
        out += part
        if stopped:
            break
    out += scanner.flush()
    assert (out, scanner.text, stopped) == (shown, text, hit)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# (seconds after the start, tokens added then) ..., seconds when read, tokens per second
@pytest.mark.parametrize(
    ("adds", "read_at", "per_s"),
    [
        ([], 0.0, 0.0),
        ([(0.0, 1)] * 20, 0.0, 2.0),  # 20 tokens, averaged over the 10 s window
        ([(0.1, 5), (0.9, 5), (4.5, 10)], 5.0, 2.0),
        ([(0.0, 30), (9.5, 10)], 9.9, 4.0),
        ([(0.0, 30), (9.5, 10)], 10.0, 1.0),  # the first second has left the window
        ([(0.0, 30), (9.5, 10)], 25.0, 0.0),  # idle: nothing recent
    ],
)
def test_throughput_over_the_last_window(
    adds: list[tuple[float, int]], read_at: float, per_s: float
) -> None:
    clock = Clock()
    start = clock.now
    meter = Throughput(window_s=10, clock=clock)
    for at, tokens in adds:
        clock.now = start + at
        meter.add(tokens)
    clock.now = start + read_at
    assert meter.per_s() == pytest.approx(per_s)


async def test_the_writer_counts_every_piece_in_the_meter() -> None:
    meter = Throughput()
    for _ in range(2):
        writer = GenerationWriter(generation(), meter)
        for piece in ("a", "b", "c"):
            writer.write(piece)
        writer.close()
    assert meter.per_s() == pytest.approx(6 / meter.window_s)


async def test_an_end_read_with_the_last_text_is_kept_for_the_next_reader() -> None:
    """The end arrived with the last text and was read with it by a reader that stopped at
    that text: a second reader used to wait for ever for an end already taken."""
    gen = generation()
    writer = GenerationWriter(gen)
    writer.write("all at once")
    writer.close()
    await asyncio.sleep(0)  # both arrive before anyone reads
    async for first in gen:
        assert first == "all at once"
        break
    assert await asyncio.wait_for(_read_all(gen), 5) == []


async def _read_all(gen: Generation) -> list[str]:
    return [d async for d in gen]


async def test_text_sent_before_the_loop_took_the_last_step_rides_along_in_order() -> None:
    # A fast step loop sends once per step; a loop that is behind wakes once for all of it.
    loop = asyncio.get_running_loop()
    first, second = generation(), generation()
    outbox = Outbox()
    first._outbox = second._outbox = outbox
    wakeups = 0
    schedule = loop.call_soon_threadsafe

    def counted(callback, *args):  # type: ignore[no-untyped-def]
        nonlocal wakeups
        wakeups += getattr(callback, "__name__", "") == "_deliver"
        return schedule(callback, *args)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:

        def steps() -> None:  # on a worker thread, as the engine's
            for piece in ("a", "b", "c"):
                first._emit(piece)
                second._emit(piece.upper())
                outbox.send()
            first._done()
            second._done()
            outbox.send()

        worker = threading.Thread(target=steps)
        worker.start()
        worker.join()  # the loop is held: it takes nothing until the worker is done
    finally:
        del loop.call_soon_threadsafe
    assert [d async for d in first] == ["abc"]
    assert [d async for d in second] == ["ABC"]
    assert wakeups == 1
    outbox.put(first, None)
    outbox.send()  # taken: the next step wakes the loop again
    await asyncio.sleep(0)
    assert first._deltas.get_nowait() is None


def test_text_for_a_loop_that_closed_unread_cancels_its_generations() -> None:
    # Nobody will read it: the worker must stop generating, not pile text up for good.
    loop = asyncio.new_event_loop()
    request = GenerationRequest(messages=[], sampling=Sampling(), seed=77)
    reply = Generation(request, loop)
    outbox = Outbox()
    reply._outbox = outbox
    reply._emit("a")
    outbox.send()  # handed over, but the loop never runs again
    loop.close()
    reply._emit("b")
    outbox.send()
    assert reply.cancelled
    assert outbox._unread == {}
