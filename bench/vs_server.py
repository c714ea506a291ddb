"""Side by side with llama-server: the workloads of a busy bot through hearthbot's whole daemon
and through llama-server (`-np N`, prompt cache), built from the binding's vendored llama.cpp.

Same GGUF, threads (all cores, or --threads), context (n_ctx per slot, N slots: llama-server
`-c n_ctx×N -np N`, hearthbot `[model] parallel` N, its KV laid out as --kv-layout says: slots,
the default, a window of n_ctx each as llama-server's; pool, one unified cache of n_ctx × N),
flash attention off in both (the engine's setting), weight repacking off in both unless --repack,
sampling (the persona's: temperature 0.7, top-k 40, top-p 0.95, min-p 0.05, repeat penalty
1.1 over 64 tokens), every reply exactly --max-tokens long (end tokens banned in both), and the
same prompts, token for token (see bench.vs_sides; hearthbot's rolling summaries are off, as
llama-server has none). Both run for the whole benchmark, in one process: each side warms
its channels once (each read cold by a first question; then, --pause later and untimed, the
burst's channels ask at once, as the burst will), then each round of each workload runs on
hearthbot's daemon and right after on llama-server, the other side idle meanwhile; the first
text shown counts as the first token in both. A channel asks again --pause seconds after its
answer (a person reads it first: hearthbot reads the next prompt's known start meanwhile,
bot.model.llama_cpp.ahead).

- burst: N warm channels (~--length-token conversations) ask a follow-up at the same moment;
- turns: 2N warm channels (the burst's among them) take turns one at a time, in random order
  (same order for both);
- long: a --long-token prompt in a new channel arrives while N−1 warm channels stream.

Ratios: VS_*_ttft = llama-server's TTFT p50 ÷ hearthbot's, VS_burst_tps = hearthbot's
aggregate tokens/s ÷ llama-server's (> 1: hearthbot is faster). Goal: ≥ 1.0.

    python -m bench.vs_server [--model FILE | --tiny] [--llama-server PATH] [--parallel 4]
                              [--threads N] [--length 1200] [--long 3000] [--max-tokens 64]
                              [--rounds 2] [--pause 1.0] [--repack] [--kv-layout slots|pool]
                              [--no-server] [--plot]

--no-server runs only hearthbot's side and checks the prompts llama-server would get (the smoke
test); --plot draws docs/vs-server.png from the last results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

from bench.harness import RESULTS, ROOT, real_model, summary, table, tiny_model, write
from bench.llama_bench import built_llama_cpp_tool
from bench.pipeline import bench_daemon
from bench.vs_sides import Answer, HearthbotSide, Server, ServerSide, version_of
from bot import logs
from bot.model.template import ChatText, open_vocab
from bot.personas import Sampling

QUESTION = "Tell me about the history of the lighthouse on the northern cliff, please."
ANSWER = "The lighthouse was built long ago by the fishing village to guide boats home."
FOLLOW_UP = "And what happened next, in a few sentences? ({})"


class Side(Protocol):
    name: str

    async def seed(self, channel: str, pairs: list[tuple[str, str]]) -> None: ...
    async def ask(self, channel: str, text: str, shown: asyncio.Event | None = None) -> Answer: ...


def history(text: ChatText, channel: str, length: int) -> list[tuple[str, str]]:
    """Earlier turns of about `length` tokens, different per channel."""
    pair = text.count_tokens(QUESTION + ANSWER) + 14  # + the template's markers, names
    return [(f"{QUESTION} ({channel}.{i})", ANSWER) for i in range(max(1, length // pair))]


def long_text(text: ChatText, tokens: int, tag: str) -> str:
    """A new question of about `tokens` tokens, never seen before (`tag`)."""
    rng = random.Random(tag)
    words = ["harbour", "boat", "rope", "tide", "gull", "keeper", "lamp", "storm", "reef"]
    lines = [f"Please summarise these notes ({tag})."]
    while text.count_tokens("\n".join(lines)) < tokens:
        lines.append(f"Day {len(lines)}: " + " ".join(rng.choices(words, k=12)) + ".")
    return "\n".join(lines)


async def warm(side: Side, text: ChatText, channels: list[str], length: int) -> None:
    """Seeded conversations, each read once by a first question (not measured)."""
    for c in channels:
        await side.seed(c, history(text, c, length))
    await asyncio.gather(*(side.ask(c, FOLLOW_UP.format("first")) for c in channels))


@dataclass
class Rounds:
    """One side's answers in a workload, round by round."""

    timed: list[Answer] = field(default_factory=list)  # whose TTFT counts
    counted: list[Answer] = field(default_factory=list)  # whose tokens count
    wall: list[tuple[float, float]] = field(default_factory=list)  # spans the tokens took

    def add(self, round_: Round) -> None:
        timed, counted, wall = round_
        self.timed += timed
        self.counted += counted
        self.wall += wall

    def figures(self) -> dict[str, Any]:
        """TTFT of the timed answers; tokens/s of the counted ones over the wall spans."""
        tokens = sum(a.tokens for a in self.counted)
        return {
            "ttft_s": summary([a.ttft for a in self.timed]),
            "tokens": tokens,
            # Prompt tokens read per answer (the rest came from the KV cache): what TTFT pays.
            "evaluated": [a.evaluated for a in self.timed],
            "tokens_per_s": tokens / sum(end - start for start, end in self.wall),
        }


Round = tuple[list[Answer], list[Answer], list[tuple[float, float]]]


def span(answers: list[Answer]) -> list[tuple[float, float]]:
    return [(min(a.sent for a in answers), max(a.done for a in answers))]


async def burst(side: Side, channels: list[str], r: int, pause: float) -> Round:
    await asyncio.sleep(pause if r else 0)  # they read the answers first
    done = await asyncio.gather(*(side.ask(c, FOLLOW_UP.format(r)) for c in channels))
    return done, done, span(done)


async def turns(side: Side, channels: list[str], r: int) -> Round:
    answers = []
    for c in random.Random(21 + r).sample(channels, len(channels)):  # the same on both sides
        answers.append(await side.ask(c, FOLLOW_UP.format(r)))
    return answers, answers, [(a.sent, a.done) for a in answers]


async def long(
    side: Side, text: ChatText, channels: list[str], r: int, long_tokens: int, pause: float
) -> Round:
    await asyncio.sleep(pause if r else 0)
    shown = [asyncio.Event() for _ in channels]
    streams = [
        asyncio.create_task(side.ask(c, FOLLOW_UP.format(r), e))
        for c, e in zip(channels, shown, strict=True)
    ]
    # The long prompt arrives once every stream shows text.
    await asyncio.gather(*(e.wait() for e in shown))
    arrival = await side.ask(f"long{r}", long_text(text, long_tokens, f"long{r}"))
    done = [*await asyncio.gather(*streams), arrival]
    return [arrival], done, span(done)


Workload = Callable[[Side, ChatText, int], Awaitable[Round]]  # one round


def shared_channels(count: int) -> list[str]:
    """The first `count` of the warm channels every workload draws from."""
    return [f"c{i}" for i in range(count)]


def workloads(args: argparse.Namespace) -> dict[str, tuple[int, Workload]]:
    """name → (warm channels it uses, the first ones of the shared set; the workload)."""
    n, warmed = args.parallel, shared_channels(2 * args.parallel)
    return {
        "burst": (n, lambda side, _, r: burst(side, warmed[:n], r, args.pause)),
        "turns": (2 * n, lambda side, _, r: turns(side, warmed, r)),
        "long": (
            n - 1,
            lambda side, text, r: long(side, text, warmed[: n - 1], r, args.long, args.pause),
        ),
    }


async def warm_side(
    side: Side, text: ChatText, chosen: dict[str, tuple[int, Workload]], args: argparse.Namespace
) -> None:
    """Warm the channels the chosen workloads use, once: the burst's last, so that they hold
    the slots when it starts, as when it warmed its own. Then, after a person's pause, those
    ask a follow-up at once, not timed: the first step of a new shape (four short prompts) is
    slow in llama.cpp (llama-server's first burst took 4.0 s against 1.9 s for the next on an
    AVX2 VM), and a daemon that has run a while has seen it."""
    needed = shared_channels(max(used for used, _ in chosen.values()))
    await warm(side, text, needed[args.parallel :], args.length)
    await warm(side, text, needed[: args.parallel], args.length)
    await asyncio.sleep(args.pause)
    await asyncio.gather(*(side.ask(c, FOLLOW_UP.format("warm")) for c in needed[: args.parallel]))


def server_args(model: Path, args: argparse.Namespace, threads: int) -> list[str]:
    """llama-server as a user would start it for N channels, with the engine's settings."""
    out = ["-m", str(model), "-t", str(threads), "-c", str(args.n_ctx * args.parallel)]
    out += ["-np", str(args.parallel), "-fa", "off", "-b", "512"]
    out += args.server_flag  # e.g. --server-flag=-kvu: one KV buffer for all slots
    return out if args.repack else [*out, "--no-repack"]


async def measure(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or os.cpu_count() or 1
    text = ChatText(open_vocab(model))
    sampling = Sampling(max_tokens=args.max_tokens)
    exe = None if args.no_server else args.llama_server or built_llama_cpp_tool("llama-server")
    result: dict[str, Any] = {
        "model": str(model),
        "threads": threads,
        "parallel": args.parallel,
        "n_ctx": args.n_ctx,
        "length": args.length,
        "long_tokens": args.long,
        "max_tokens": args.max_tokens,
        "pause_s": args.pause,
        "rounds": args.rounds,
        "repack": args.repack,
        "kv_layout": args.kv_layout,
        "llama_cpp_python": version("llama-cpp-python"),
    }
    if exe is not None:
        result["llama_server"] = {"path": str(exe), "version": version_of(exe)}
        result["llama_server"]["command"] = server_args(model, args, threads)
    chosen = {k: w for k, w in workloads(args).items() if k in args.only.split(",")}
    if not chosen:
        raise SystemExit(f"--only {args.only}: no such workload (burst, turns, long)")
    async with contextlib.AsyncExitStack() as stack:
        bench = await stack.enter_async_context(
            bench_daemon(
                model,
                args.max_tokens,
                args.n_ctx,
                parallel=args.parallel,
                repack_weights=args.repack,
                n_threads=threads,
                kv_layout=args.kv_layout,
                # llama-server writes no rolling summaries: the shared channels grow past the
                # share of the window that summarizes turns ahead of a trim (window.doomed).
                memory={"summary_tokens": 0},
            )
        )
        ours = HearthbotSide(bench)
        theirs = ServerSide("", text, {}, sampling)
        sides: list[Side] = [ours]
        if exe is not None:
            server = await stack.enter_async_context(Server(exe, server_args(model, args, threads)))
            theirs.url = server.url
            sides.append(theirs)
        # Side by side: each warm-up and each round of a workload on hearthbot, then at once
        # on llama-server (which replays the prompts hearthbot rendered), so that a drift in
        # the machine's speed over the minutes of a run falls on both alike (a workload's
        # rounds one side after the other put a minute between the sides: the long prompt's
        # three rounds took 33.9, 31.5, 28.9 s on hearthbot, then 28.4, 29.2, 31.0 s on
        # llama-server); the side not working meanwhile is idle.
        for side in sides:
            theirs.script = ours.script()
            await ours.settle()
            await warm_side(side, text, chosen, args)
        for name, (_, workload) in chosen.items():
            got = {side.name: Rounds() for side in sides}
            for r in range(args.rounds):
                for side in sides:
                    theirs.script = ours.script()
                    await ours.settle()  # the other side idle, on both turns
                    print(f"== {name}, round {r + 1}: {side.name}", flush=True)
                    got[side.name].add(await workload(side, text, r))
            result[name] = {side: rounds.figures() for side, rounds in got.items()}
            report({name: result[name]})  # as it goes: a long run shows each when done
    theirs.script = ours.script()
    prompts = [len(r.prompt or ()) for requests in theirs.script.values() for r in requests]
    result["prompt_tokens"] = {"min": min(prompts), "max": max(prompts)}
    same, total = theirs.replays(ours.finals)
    result["same_prompts"] = f"{same}/{total}"
    if same != total:
        raise SystemExit("llama-server did not get hearthbot's prompts")
    report(result)
    return result


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """The figures of `make bench` (of the workloads run): > 1 means hearthbot is faster."""

    def ttft(name: str) -> float:
        w = result[name]
        return float(w["llama-server"]["ttft_s"]["p50"] / w["hearthbot"]["ttft_s"]["p50"])

    found = {f"VS_{name}_ttft": ttft(name) for name in workloads_names(result)}
    if burst := result.get("burst"):
        found["VS_burst_tps"] = (
            burst["hearthbot"]["tokens_per_s"] / burst["llama-server"]["tokens_per_s"]
        )
    return found


def report(result: dict[str, Any]) -> None:
    rows = []
    for name in workloads_names(result):
        w = result[name]
        for side in ("hearthbot", "llama-server"):
            if side in w:
                s = w[side]
                ttft = s["ttft_s"]
                tps = f"{s['tokens_per_s']:.1f}"
                rows.append(
                    [name, side, f"{ttft['p50']:.2f}", f"{ttft['p90']:.2f}", ttft["n"], tps]
                )
    print(table(rows, ["workload", "side", "TTFT p50 s", "p90 s", "n", "aggregate tok/s"]))


def workloads_names(result: dict[str, Any]) -> list[str]:
    """The workloads run (results written before `long_tokens` held the size in `long`)."""
    return [name for name in ("burst", "turns", "long") if isinstance(result.get(name), dict)]


def plot(result: dict[str, Any]) -> Path:
    """docs/vs-server.png: TTFT p50 (p90 whiskers) and aggregate tokens/s, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = workloads_names(result)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    for offset, side, color in ((-0.2, "hearthbot", "tab:blue"), (0.2, "llama-server", "gray")):
        xs = [i + offset for i in range(len(names))]
        p50 = [result[n][side]["ttft_s"]["p50"] for n in names]
        p90 = [result[n][side]["ttft_s"]["p90"] for n in names]
        err = [[0] * len(names), [b - a for a, b in zip(p50, p90, strict=True)]]
        left.bar(xs, p50, 0.4, yerr=err, color=color, label=side, capsize=3)
        right.bar(xs, [result[n][side]["tokens_per_s"] for n in names], 0.4, color=color)
    for ax, label in ((left, "time to first token, p50 (bar) to p90 (s)"), (right, "tok/s")):
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    right.set_title("aggregate tokens/s", fontsize=10)
    left.set_title("time to first token", fontsize=10)
    left.legend(fontsize=9)
    model = result["model"].rsplit("/", 1)[-1]
    fig.suptitle(f"hearthbot vs llama-server -np {result['parallel']}: {model}", fontsize=11)
    fig.tight_layout()
    out = ROOT / "docs" / "vs-server.png"
    fig.savefig(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument(
        "--llama-server", type=Path, default=os.environ.get("HEARTHBOT_LLAMA_SERVER")
    )
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, help="both sides (default: all cores)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="per slot")
    parser.add_argument("--length", type=int, default=1200, help="warm conversations, tokens")
    parser.add_argument("--long", type=int, default=3000, help="the long new prompt, tokens")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--pause", type=float, default=1.0, help="s before a channel asks again (both sides)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="burst,turns,long", help="workloads to run")
    parser.add_argument("--repack", action="store_true", help="CPU weight repacking on (both)")
    parser.add_argument(
        "--kv-layout",
        choices=("slots", "pool"),
        default="slots",
        help="hearthbot's [model] kv_layout",
    )
    parser.add_argument("--server-flag", action="append", default=[], help="more flags")
    parser.add_argument("--no-server", action="store_true", help="hearthbot's side only")
    parser.add_argument("--plot", action="store_true", help="only draw docs/vs-server.png")
    args = parser.parse_args()
    logs.configure("warning")
    name = "vs_server" + ("-tiny" if args.tiny else "")
    if args.plot:
        import json

        print(f"wrote {plot(json.loads((RESULTS / f'{name}.json').read_text()))}")
        return
    model = tiny_model() if args.tiny else args.model or real_model()
    result = asyncio.run(measure(model, args))
    if not args.no_server:
        result["ratios"] = ratios(result)
        print("  ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()), "(goal ≥ 1.0)")
    print(f"wrote {write(name, result)}")


if __name__ == "__main__":
    main()
