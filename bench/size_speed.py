"""SIZE_SPEED: does generation speed scale as 1 / file size? `hearthbot model suggest` assumes
so to turn one measurement into every catalog row's tokens/s (bot/model/suggest.py).

The model is requantized to Q8_0 (a larger file of the same network: llama.cpp's own
quantizer, requantizing allowed), both are loaded side by side with a one-reply pool, and
`bot.app.suggest.measure_speed` (the measurement suggest makes) runs on each in turn. The
figure is (tokens/s of the smaller ÷ the larger) ÷ (size of the larger ÷ the smaller): 1.0
when speed is exactly inversely proportional to size.

    python -m bench.size_speed [--tiny] [--model FILE] [--repeats 3] [--tokens 16] [--repack]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

import llama_cpp

from bench.harness import RESULTS, real_model, repack, table, tiny_model, write
from bot.app.suggest import measure_speed
from bot.model.llama_cpp.backend import LlamaCppBackend


def requantized(path: Path) -> Path:
    """`path` as Q8_0, made once into bench/results/models/."""
    out = RESULTS / "models" / f"{path.stem}-requantized-q8_0.gguf"
    if out.exists() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), params) != 0:
        raise SystemExit(f"llama.cpp could not requantize {path}")
    return out


async def run(path: Path, repeats: int, tokens: int, weights: bool) -> dict[str, Any]:
    models = {"model": path, "q8_0": requantized(path)}
    threads = os.cpu_count() or 1  # as [model] n_threads' default: all cores
    loaded = {
        name: await LlamaCppBackend.load(file, 512, threads, 512, parallel=1, repack=weights)
        for name, file in models.items()
    }
    sizes = {name: file.stat().st_size for name, file in models.items()}
    speeds: dict[str, list[float]] = {name: [] for name in models}
    try:
        for name, backend in loaded.items():  # warm-up: first use pages weights in
            await measure_speed(backend, sizes[name], 4)
        for _ in range(repeats):  # in turns, so a busy moment hits both alike
            for name, backend in loaded.items():
                speed = await measure_speed(backend, sizes[name], tokens)
                speeds[name].append(speed.tokens_per_s)
    finally:
        for backend in loaded.values():
            await backend.close()
    small, big = sorted(models, key=lambda name: sizes[name])
    tps = {name: statistics.median(values) for name, values in speeds.items()}
    speed_ratio = tps[small] / tps[big]
    size_ratio = sizes[big] / sizes[small]
    return {
        "model": str(path),
        "sizes": sizes,
        "tokens_per_s": speeds,
        "speed_ratio": speed_ratio,
        "size_ratio": size_ratio,
        "SIZE_SPEED": speed_ratio / size_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's generated model")
    parser.add_argument("--model", type=Path, help="a GGUF (default: the bench model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument(
        "--repack",
        action="store_true",
        help="llama.cpp's CPU weight repacking (off by default: a Q8_0 file is repacked with "
        "AMX, which the development VM traps on; both files load the same way either way)",
    )
    args = parser.parse_args()
    path = args.model or (tiny_model() if args.tiny else real_model())
    result = asyncio.run(run(path, args.repeats, args.tokens, args.repack and repack()))
    rows = [
        [name, f"{size / 2**20:.0f} MiB", f"{statistics.median(result['tokens_per_s'][name]):.2f}"]
        for name, size in result["sizes"].items()
    ]
    print(table(rows, ["file", "size", "tokens/s (median)"]))
    print(
        f"speed ratio {result['speed_ratio']:.2f}, size ratio {result['size_ratio']:.2f}: "
        f"SIZE_SPEED {result['SIZE_SPEED']:.2f} (1.0: speed exactly ∝ 1 / size)"
    )
    write("size_speed" + ("-tiny" if args.tiny else ""), result)


if __name__ == "__main__":
    main()
