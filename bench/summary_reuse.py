"""P2_summaries: P2 (bench.kv_reuse) through the whole daemon, with rolling summaries on.

One channel of a daemon wired like `hearthbot run` (bench.pipeline, `[memory] summary_tokens`
on) talks until its window has trimmed `--trims` times. After each answer the daemon is left
idle until its summary runs end (they run only then: bot.summarizer), as a chat's pauses
would. A turn whose prompt begins with the whole previous prompt is *between trims*: the
summary it shows changed only at the last trim, so its KV state should be reused. On those
turns, once a summary is shown: the reused-token share (the engine's reused ÷ prompt tokens)
and P2_summaries = the turn's time to first token (the engine's, as P2) ÷ the same prompt
evaluated cold right after, on the idle daemon's engine (no cache key, as P2's reference);
the median. Goal: P2's, ≤ 0.15. Also reported: how many turns trimmed, summaries written.

    python -m bench.summary_reuse [--model FILE | --tiny] [--n-ctx 2048] [--trims 3]
                                  [--summary-tokens 256] [--max-tokens 32] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.harness import real_model, summary, table, tiny_model, write
from bench.pipeline import Bench, bench_daemon
from bot import logs
from bot.model.types import Generation, GenerationRequest

CHANNEL = "talk"
SHOWN = "Earlier in this conversation (a summary):"  # bot.texts.with_summary
TOPICS = ("the lighthouse", "the harbour", "the old mill", "the winter market", "the ferry")
WAIT_S = 1800.0


def question(turn: int) -> str:
    topic = TOPICS[turn % len(TOPICS)]
    return (
        f"Turn {turn}: tell me one more thing about {topic} on the northern cliff, and who "
        f"looked after it in the year {1800 + turn}; keep it to a sentence or two."
    )


@dataclass(slots=True)
class Turn:
    """One answer's prompt and KV figures, and its cold reference's TTFT if measured."""

    prompt: list[int]
    reused: int
    ttft_s: float
    summary_shown: bool
    head: tuple[str, str]  # the system prompt (with any summary) and the window's first turn
    between_trims: bool = False
    cold_ttft_s: float | None = None


async def answered(bench: Bench, text: str) -> Generation:
    """Send a message, wait for its answer and for the daemon's idle-time summary runs."""
    message = bench.message(CHANNEL, "ann", text)
    await bench.daemon.handle(message)
    await asyncio.wait_for(bench.adapter.open_reply(message).done.wait(), WAIT_S)
    responder = bench.daemon.responder
    await asyncio.wait_for(bench.daemon.wait_idle(), WAIT_S)
    while responder.summarizing:  # noqa: ASYNC110 (a summary run ends on its own)
        await asyncio.sleep(0.05)
    key = f"bench:{CHANNEL}"
    return [g for g in bench.engine.generations if g.request.cache_key == key][-1]


async def cold_ttft(bench: Bench, request: GenerationRequest) -> float:
    """The same prompt evaluated from scratch (no cache key), as bench.kv_reuse's reference."""
    sampling = request.sampling.model_copy(update={"max_tokens": 2})
    cold = replace(request, sampling=sampling, cache_key=None, cold=True)
    generation = bench.engine.start(cold)
    async for _ in generation:
        pass
    assert generation.result.first_token_s is not None
    return generation.result.first_token_s


async def conversation(bench: Bench, trims: int, most_turns: int) -> list[Turn]:
    turns: list[Turn] = []
    trimmed = 0
    for i in range(most_turns):
        generation = await answered(bench, question(i))
        request, result = generation.request, generation.result
        assert result.first_token_s is not None, f"turn {i} failed: {result.error}"
        turn = Turn(
            prompt=list(request.prompt or ()),
            reused=result.reused_tokens,
            ttft_s=result.first_token_s,
            summary_shown=SHOWN in request.messages[0]["content"],
            head=(request.messages[0]["content"], request.messages[1]["content"]),
        )
        if turns:
            previous = turns[-1].prompt
            turn.between_trims = turn.prompt[: len(previous)] == previous
            trimmed += not turn.between_trims
        if turn.between_trims and turn.summary_shown:
            turn.cold_ttft_s = await cold_ttft(bench, request)
        turns.append(turn)
        print(
            f"  turn {i}: {len(turn.prompt)} prompt tokens, {turn.reused} reused,"
            f" TTFT {turn.ttft_s:.3f} s"
            + (f", cold {turn.cold_ttft_s:.3f} s" if turn.cold_ttft_s else "")
            + ("" if turn.between_trims or not turns[:-1] else " (trim)")
            + (" (summary shown)" if turn.summary_shown else ""),
            file=sys.stderr,
            flush=True,
        )
        if trimmed >= trims and turn.between_trims and turns[-2].between_trims:
            break  # the last trim was followed by turns that reuse
    return turns


async def measure(
    model: Path,
    n_ctx: int,
    trims: int,
    summary_tokens: int,
    max_tokens: int,
    most_turns: int,
    threads: int | None,
) -> dict[str, Any]:
    memory = {"summary_tokens": summary_tokens}
    async with bench_daemon(
        model,
        max_tokens,
        n_ctx=n_ctx,
        kv_cache_mb=256,
        parallel=2,
        n_threads=threads,
        memory=memory,
    ) as bench:
        turns = await conversation(bench, trims, most_turns)
        summarizer = bench.daemon.responder.summarizer
        written, stopped = summarizer.runs, summarizer.stopped
    measured = [t for t in turns if t.cold_ttft_s is not None]
    if not measured:
        raise SystemExit("no turn between trims showed a summary: raise --trims or --most-turns")
    ratios = [t.ttft_s / t.cold_ttft_s for t in measured if t.cold_ttft_s]
    shares = [t.reused / len(t.prompt) for t in measured]
    trim_points = [i for i, t in enumerate(turns) if i and not t.between_trims]
    # What changed the prompt's beginning at each: the window's start, or only the summary.
    causes = [
        "window" if turns[i].head[1] != turns[i - 1].head[1] else "summary only"
        for i in trim_points
    ]
    return {
        "model": str(model),
        "n_ctx": n_ctx,
        "threads": threads,
        "summary_tokens": summary_tokens,
        "turns": len(turns),
        "trims": len(trim_points),
        "trim_turns": trim_points,
        "trim_causes": causes,
        "summaries_written": written,
        "summary_runs_stopped": stopped,
        "turns_measured": len(measured),
        "prompt_tokens": summary([len(t.prompt) for t in measured]),
        "warm_ttft_s": summary([t.ttft_s for t in measured]),
        "cold_ttft_s": summary([t.cold_ttft_s for t in measured if t.cold_ttft_s]),
        "reused_share": summary(shares),
        "reused_share_min": min(shares),
        "P2_summaries": statistics.median(ratios),
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--trims", type=int, default=3)
    parser.add_argument("--summary-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=32, help="of each answer")
    parser.add_argument("--most-turns", type=int, default=200)
    parser.add_argument("--threads", type=int, help="llama.cpp's (default: every core)")
    args = parser.parse_args()
    logs.configure("warning")
    model = tiny_model() if args.tiny else args.model or real_model()
    result = asyncio.run(
        measure(
            model,
            args.n_ctx,
            args.trims,
            args.summary_tokens,
            args.max_tokens,
            args.most_turns,
            args.threads,
        )
    )
    w, c, s = result["warm_ttft_s"], result["cold_ttft_s"], result["reused_share"]
    print(
        f"{model.name}: one channel, n_ctx {args.n_ctx}, summaries ≤ {args.summary_tokens}"
        f" tokens: {result['turns']} turns, {result['trims']} trimmed"
        f" (turns {result['trim_turns']}: {', '.join(result['trim_causes'])}),"
        f" {result['summaries_written']} summaries written"
    )
    print(
        table(
            [
                ["follow-up between trims", f"{w['p50']:.3f}", f"{w['max']:.3f}"],
                ["same prompt, cold", f"{c['p50']:.3f}", f"{c['max']:.3f}"],
                ["reused ÷ prompt tokens", f"{s['p50']:.3f}", f"min {s['min']:.3f}"],
            ],
            [f"{result['turns_measured']} turns with a summary shown", "median", "max"],
        )
    )
    print(f"P2_summaries = warm ÷ cold: {result['P2_summaries']:.3f} (goal ≤ 0.15)")
    print(f"wrote {write('summary_reuse' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
