"""P1 stretch: generation tokens/s through the whole pipeline ÷ llama-bench's, llama.cpp's own
benchmark built from the binding's vendored llama.cpp (the sources of the engine's library).

llama-bench decodes without sampling, at the depth of the pipeline's prompt (`-d`), with the
same threads: what the hardware and llama.cpp can do at all. Stretch goal: ≥ 0.95. The
pipeline figure is bench.throughput's (a message through the console, queue, context builder
and model worker; end-of-generation tokens banned so every run makes max_tokens).

    python -m bench.llama_bench [--llama-bench PATH] [--model FILE] [--max-tokens 128]
                                [--repeats 5]

Without --llama-bench (or $HEARTHBOT_LLAMA_BENCH) one is built into
~/.cache/hearthbot-llama-bench: pip downloads the pinned llama-cpp-python source from the
package index, cmake builds the llama-bench target (about 4 minutes on 2 cores, once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.harness import real_model, write
from bench.throughput import measure

CACHE = Path.home() / ".cache" / "hearthbot-llama-bench"


def built_llama_bench(cache: Path = CACHE) -> Path:
    """llama-bench from the installed binding's own llama.cpp version, built once."""
    return built_llama_cpp_tool("llama-bench", cache)


def built_llama_cpp_tool(target: str, cache: Path = CACHE) -> Path:
    """One of llama.cpp's programs (a cmake target) from the binding's own vendored sources,
    built once; every target shares one source tree and build directory."""
    pinned = version("llama-cpp-python")
    exe = cache / pinned / "build" / "bin" / target
    if exe.exists():
        return exe
    source = cache / pinned
    source.mkdir(parents=True, exist_ok=True)
    if not list(source.glob("llama_cpp_python-*/vendor/llama.cpp")):
        pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        subprocess.run([*pip, f"llama-cpp-python=={pinned}", "-d", str(source)], check=True)
        (archive,) = source.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(source, filter="data")
    llama_cpp = next(source.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = source / "build"
    # As llama-cpp-python builds it on Linux: shared libraries, native CPU features, no curl.
    options = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF"]
    subprocess.run(["cmake", "-S", str(llama_cpp), "-B", str(build), *options], check=True)
    jobs = str(os.cpu_count() or 1)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", jobs], check=True)
    return exe


def llama_bench(
    exe: Path, model: Path, tokens: int, depth: int, threads: int, repeats: int
) -> dict[str, Any]:
    """llama-bench's text-generation run: its mean tokens/s and standard deviation."""
    command = [str(exe), "-m", str(model), "-p", "0", "-n", str(tokens), "-d", str(depth)]
    command += ["-t", str(threads), "-r", str(repeats), "-o", "json"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    (run,) = json.loads(out)
    return {"avg_ts": run["avg_ts"], "stddev_ts": run["stddev_ts"], "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-bench", type=Path, default=os.environ.get("HEARTHBOT_LLAMA_BENCH"))
    parser.add_argument("--model", type=Path, help="GGUF (default: the real bench model)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = args.model or real_model()
    exe = args.llama_bench or built_llama_bench()
    pipeline = asyncio.run(measure(model, args.max_tokens, args.repeats, n_ctx=2048))
    ceiling = llama_bench(
        exe,
        model,
        args.max_tokens,
        depth=pipeline["prompt_tokens"],
        threads=pipeline["threads"],
        repeats=args.repeats,
    )
    ours = pipeline["tokens_per_s"]["pipeline"]["p50"]
    ratio = ours / ceiling["avg_ts"]
    result: dict[str, Any] = {
        "model": str(model),
        "pipeline_tokens_per_s": ours,
        "llama_bench": ceiling,
        "ratio": ratio,
    }
    print(
        f"{model.name}, {args.max_tokens} tokens at depth {pipeline['prompt_tokens']}, "
        f"{pipeline['threads']} threads: pipeline {ours:.1f} tok/s (median of {args.repeats}), "
        f"llama-bench {ceiling['avg_ts']:.1f} ± {ceiling['stddev_ts']:.1f} tok/s"
    )
    print(
        f"pipeline ÷ llama-bench: {ratio:.3f}; stretch goal ≥ 0.95: "
        f"{'met' if ratio >= 0.95 else 'NOT met'}"
    )
    print(f"wrote {write('llama-bench', result)}")


if __name__ == "__main__":
    main()
