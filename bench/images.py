"""IMG_*: what a picture costs its own reply and the replies streaming beside it.

A picture is evaluated by a decode of its own between two steps (bot.model.llama_cpp.vision):
the one exception to the engine's one-chunk stall bound. Measured side by side in one run,
medians of `--repeats`:

- IMG_ttft_s, IMG_ttft_ratio: a turn with one picture's time to first token, and that ÷ the
  same turn without the picture (fresh channels each time, so nothing is reused);
- IMG_eval_s: the picture's encode + decode alone (Vision.last_image_s);
- IMG_gap_s, IMG_gap_ratio: while `--others` replies stream, a picture arrives; the longest gap
  between two of their updates from its arrival to its first token, and that ÷ their median gap
  before it arrived (what the picture stalls them by). The others stream until the picture's
  first token is out, then are cancelled: however coarsely a busy event loop coalesces their
  text into updates, they are still streaming when it arrives.

Needs a real projector for the model: `--mmproj FILE` or $HEARTHBOT_BENCH_MMPROJ (never in CI,
and never a test dependency). `--tiny` runs it on the test suite's tiny model and projector (a
smoke run: the numbers say nothing about a real model). Loads without weight repacking when
HEARTHBOT_BENCH_NO_REPACK=1 (this VM traps on AMX).

    python -m bench.images [--model FILE --mmproj FILE | --tiny] [--image FILE] [--others 3]
                           [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, ROOT, real_model, repack, table, tiny_model, write
from bot import logs
from bot.images import ImageLimits, decode_image
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.types import DecodedImage, Generation, GenerationRequest
from bot.personas import Sampling

LIMITS = ImageLimits(max_bytes=20 * 2**20, max_pixels=50_000_000, max_side=16_384)
N_CTX = 4096
STREAMING = 6  # updates each other reply has streamed before the picture arrives


def tiny_projector() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.tinyprojector import tiny_projector_path

    return tiny_projector_path(RESULTS / "models")


def a_picture(side: int, source: Path | None) -> DecodedImage:
    """The picture given, else a drawn one (stripes and a disc), shrunk to the projector's side."""
    if source is not None:
        data = source.read_bytes()
    else:
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (640, 480), (40, 90, 160))
        draw = ImageDraw.Draw(image)
        for x in range(0, 640, 80):
            draw.rectangle((x, 0, x + 30, 480), fill=(230, 200, 40))
        draw.ellipse((200, 120, 440, 360), fill=(200, 30, 30))
        out = io.BytesIO()
        image.save(out, "PNG")
        data = out.getvalue()
    return decode_image(data, LIMITS, side)


def ask(channel: str, tokens: int, picture: DecodedImage | None = None) -> GenerationRequest:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Describe what you see, in detail ({channel})."},
    ]
    return GenerationRequest(
        messages=messages,
        sampling=Sampling(temperature=0.7, max_tokens=tokens),
        seed=7,
        cache_key=channel,
        ban_eos=True,
        images={1: [picture]} if picture is not None else {},
    )


async def first_token(engine: LlamaCppBackend, request: GenerationRequest) -> float:
    generation = engine.start(request)
    async for _ in generation:
        pass
    result = generation.result
    assert result.error is None and result.first_token_s is not None, result.error
    return result.first_token_s


async def stalls(
    engine: LlamaCppBackend, picture: DecodedImage, others: int, run: int
) -> tuple[float, float]:
    """(longest gap of the other replies while the picture was evaluated, their median gap
    before it arrived), in seconds."""
    stamps: list[list[float]] = [[] for _ in range(others)]
    streaming = asyncio.Event()  # every other reply has streamed a few updates

    async def stream(i: int, generation: Generation) -> None:
        async for _ in generation:
            stamps[i].append(time.perf_counter())
            if min(len(s) for s in stamps) >= STREAMING:
                streaming.set()

    # As long as their window allows: cancelled once the picture's first token is out.
    generations = [engine.start(ask(f"other{run}-{i}", N_CTX // 2)) for i in range(others)]
    streams = [asyncio.create_task(stream(i, g)) for i, g in enumerate(generations)]
    ready = asyncio.create_task(streaming.wait())
    await asyncio.wait([ready, *streams], return_when=asyncio.FIRST_COMPLETED)
    if not streaming.is_set():
        ready.cancel()
        raise RuntimeError(f"another reply ended before {STREAMING} updates each had streamed")
    arrived = time.perf_counter()
    seeing = engine.start(ask(f"seeing{run}", 2, picture))
    async for _ in seeing:
        break
    seen = time.perf_counter()
    for generation in generations:
        generation.cancel()
    await asyncio.gather(*streams)
    _ = [d async for d in seeing]
    before = [b - a for s in stamps for a, b in itertools.pairwise(s) if b < arrived]
    return longest_gap(stamps, arrived, seen), statistics.median(before)


def longest_gap(stamps: list[list[float]], arrived: float, seen: float) -> float:
    """The longest wait between two texts of the other replies (their `stamps`) that overlaps
    the picture's evaluation, from its arrival to its first token (`seen`). A reply with no
    text after `seen` (it is stopped then) waited at least until `seen`."""
    gaps = [
        b - a
        for s in stamps
        for a, b in itertools.pairwise([*s, seen] if s and s[-1] < seen else s)
        if b > arrived and a < seen
    ]
    return max(gaps, default=0.0)


async def measure(
    model: Path,
    mmproj: Path,
    source: Path | None,
    others: int,
    repeats: int,
    threads: int,
) -> dict[str, Any]:
    engine = await LlamaCppBackend.load(
        model, n_ctx=N_CTX, n_threads=threads, parallel=others + 1, mmproj=mmproj, repack=repack()
    )
    try:
        vision = engine._engine.pictures.vision if engine._engine is not None else None
        assert vision is not None
        picture = a_picture(engine.info.image_side_px, source)
        await first_token(engine, ask("warm-up", 2, picture))
        with_picture, without, evals, gaps, medians = [], [], [], [], []
        for run in range(repeats):
            with_picture.append(await first_token(engine, ask(f"pic{run}", 2, picture)))
            evals.append(vision.last_image_s)
            without.append(await first_token(engine, ask(f"text{run}", 2)))
            gap, median = await stalls(engine, picture, others, run)
            gaps.append(gap)
            medians.append(median)
        info = engine.info
    finally:
        await engine.close()
    return {
        "model": str(model),
        "mmproj": str(mmproj),
        "image_tokens": info.image_tokens,
        "image_side_px": info.image_side_px,
        "others": others,
        "threads": threads,
        "repack": repack(),
        "ttft_s": {"picture": with_picture, "text": without},
        "gap_s": gaps,
        "median_gap_s": medians,
        "IMG_ttft_s": statistics.median(with_picture),
        "IMG_ttft_ratio": statistics.median(
            p / t for p, t in zip(with_picture, without, strict=True)
        ),
        "IMG_eval_s": statistics.median(evals),
        "IMG_gap_s": statistics.median(gaps),
        "IMG_gap_ratio": statistics.median(g / m for g, m in zip(gaps, medians, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path, default=os.environ.get("HEARTHBOT_BENCH_MMPROJ"))
    parser.add_argument("--image", type=Path, help="a picture file (default: a drawn one)")
    parser.add_argument("--tiny", action="store_true", help="smoke run on the tiny test model")
    parser.add_argument("--others", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logs.configure("warning")
    if args.tiny:
        model, mmproj = tiny_model(), tiny_projector()
    elif args.mmproj is None:
        raise SystemExit("give the model's projector: --mmproj FILE or HEARTHBOT_BENCH_MMPROJ")
    else:
        model, mmproj = args.model or real_model(), args.mmproj
    result = asyncio.run(
        measure(model, mmproj, args.image, args.others, args.repeats, args.threads)
    )
    print(
        f"{model.name} + {mmproj.name}: a picture is {result['image_tokens']} tokens; "
        f"{args.others} other replies streaming; {args.repeats} runs"
    )
    rows = [
        ["time to first token, picture", f"{result['IMG_ttft_s']:.3f} s"],
        ["  ÷ the same turn without it", f"{result['IMG_ttft_ratio']:.2f}"],
        ["picture encode + decode", f"{result['IMG_eval_s']:.3f} s"],
        ["others' longest gap meanwhile", f"{result['IMG_gap_s']:.3f} s"],
        ["  ÷ their median gap before", f"{result['IMG_gap_ratio']:.2f}"],
    ]
    print(table(rows, ["figure", "median"]))
    print(f"wrote {write('images' + ('-tiny' if args.tiny else ''), result)}")


if __name__ == "__main__":
    main()
