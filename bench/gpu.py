"""P1 and P6 with every layer on an NVIDIA GPU: one command for anyone with one.

    python3 -m bench.gpu [--venv DIR | --python PATH | --cpu] [--model FILE | --tiny] [--dry-run]

From a checkout on a Linux box with an NVIDIA GPU and its driver. Standard library only: it
makes its own venv (default ~/.cache/hearthbot-gpu-venv), installs hearthbot there with
llama.cpp built for CUDA (docker/cmake_args.sh cuda; llama-cpp-python rebuilt with
--force-reinstall --no-cache-dir once, a stamp remembers it), checks that llama.cpp sees a GPU
(bot.model.llama_cpp.devices), then runs bench.throughput (P1) and bench.batching (P6 and
P3_streaming: the whole daemon ÷ raw llama.cpp, `make bench`'s measurement) in that venv with
the default n_gpu_layers (all of them) and prints one JSON line with `make bench`'s keys for
those figures (bench.figures). CUDA's compiler comes from the CUDA toolkit (nvcc on PATH or in
/usr/local/cuda), else from NVIDIA's wheels (nvidia-cuda-nvcc-cu12, -cuda-runtime-cu12,
-cublas-cu12), which it installs into the venv and links into one toolkit directory.

Expected output (the numbers depend on the card), after the two benchmarks' own tables:

    {"device": "CUDA0 — NVIDIA GeForce RTX 3060", "P1": 0.98, "P6_n2": 0.95, "P6_n4": 0.93,
     "P6_scale4": 0.97, "P3_streaming": 1.3, "gpu_tok_s_1": 190.5, "gpu_tok_s_2": 330.0,
     "gpu_tok_s_4": 520.2}

P1: the pipeline's tokens/s ÷ llama-cpp-python's create_completion on the same offloaded
model (goal ≥ 0.97); P6_nN: the daemon's aggregate tokens/s with N channels at once ÷ raw
llama.cpp decoding N sequences (goal ≥ 0.90); P6_scale4, P3_streaming as in `make bench`
(bench/README.md). gpu_tok_s_N: raw llama.cpp's aggregate tokens/s at N sequences.

`--python PATH` runs in an interpreter that already has a GPU build instead of making one (it
stops with an error when that llama.cpp sees no GPU); `--cpu` runs the same two benchmarks in
this interpreter on whatever it was built for, without asking for a GPU (with `--tiny`, on the
test suite's model: what tests/test_bench_gpu.py runs). The development machines have no GPU:
`--dry-run` prints what it would do there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from bench.figures import BATCHING_SMOKE, THROUGHPUT_SMOKE, batching_figures, p1_figure

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path.home() / ".cache" / "hearthbot-gpu-venv"
CUDA_WHEELS = ("nvidia-cuda-nvcc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12")
# The wheels' directories under site-packages/nvidia/ merged into one toolkit root for CMake.
WHEEL_PARTS = ("cuda_nvcc", "cuda_runtime", "cublas")
SEE_GPU = (
    "from bot.model.llama_cpp.devices import devices; "
    "gpus = [f'{d.name} — {d.description}' for d in devices() if d.gpu]; "
    "print(gpus[0] if gpus else '')"
)


class Plan:
    """The commands of a run, executed or (--dry-run) printed."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.commands: list[list[str]] = []

    def run(self, command: list[str], env: dict[str, str] | None = None) -> str:
        self.commands.append(command)
        shown = " ".join(command)
        if env and "CMAKE_ARGS" in env:
            shown = f"CMAKE_ARGS='{env['CMAKE_ARGS']}' {shown}"
        print(f"$ {shown}", flush=True)
        if self.dry_run:
            return ""
        out = subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE)
        text = out.stdout.decode(errors="replace")
        print(text, end="", flush=True)
        return text


def cmake_args() -> str:
    out = subprocess.run(
        ["sh", str(ROOT / "docker" / "cmake_args.sh"), "cuda"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.exists()), None
    )


def toolkit_from_wheels(plan: Plan, python: Path, root: Path) -> dict[str, str]:
    """NVIDIA's wheels as one CUDA toolkit root (bin, include, lib), for CMake's FindCUDAToolkit."""
    plan.run([str(python), "-m", "pip", "install", "--quiet", *CUDA_WHEELS])
    if plan.dry_run:
        site = root / "lib" / "site-packages"
    else:
        out = plan.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('platlib'))"]
        )
        site = Path(out.strip())
    toolkit = root / "cuda-toolkit"
    if not plan.dry_run:
        for sub in ("bin", "include", "lib64"):
            (toolkit / sub).mkdir(parents=True, exist_ok=True)
        for part in WHEEL_PARTS:
            base = site / "nvidia" / part
            for sub, target in (("bin", "bin"), ("include", "include"), ("lib", "lib64")):
                for item in (base / sub).glob("*") if (base / sub).is_dir() else []:
                    link = toolkit / target / item.name
                    if not link.exists():
                        link.symlink_to(item)
                    # The linker wants libcudart.so, the wheels ship libcudart.so.12.
                    if target == "lib64" and ".so." in item.name:
                        plain = toolkit / target / (item.name.split(".so.")[0] + ".so")
                        if not plain.exists():
                            plain.symlink_to(item)
        (toolkit / "lib").mkdir(exist_ok=True)
    lib = str(toolkit / "lib64")
    return {
        "CUDAToolkit_ROOT": str(toolkit),
        "CUDACXX": str(toolkit / "bin" / "nvcc"),
        "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"),
        "LIBRARY_PATH": lib,
    }


def prepare(plan: Plan, root: Path) -> tuple[Path, dict[str, str]]:
    """The venv with hearthbot and llama.cpp for CUDA; the environment to run in it."""
    python = root / "bin" / "python"
    if not plan.dry_run and not python.exists():
        venv.create(root, with_pip=True)
    # Not a CMAKE_ARGS from outside (`make` exports the CPU build's): the build sets its own.
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}
    plan.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip>=24"])
    plan.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test,bench]"])
    if find_nvcc() is None:
        env.update(toolkit_from_wheels(plan, python, root))
    stamp = root / ".llama-cuda"
    if plan.dry_run or not stamp.exists():
        version = plan.run(
            [
                str(python),
                "-c",
                "from importlib.metadata import version; print(version('llama-cpp-python'))",
            ]
        ).strip()
        build = env | {"CMAKE_ARGS": cmake_args()}
        plan.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--force-reinstall",
                "--no-cache-dir",
                "--no-deps",
                f"llama-cpp-python=={version or 'INSTALLED'}",
            ],
            env=build,
        )
        if not plan.dry_run:
            stamp.touch()
    return python, env


def figures(throughput: dict, batching: dict, device: str) -> dict[str, object]:  # type: ignore[type-arg]
    """The JSON line: `make bench`'s P1, P6_nN, P6_scaleN and P3_streaming, and raw llama.cpp's
    aggregate tokens/s at each N on this device."""
    found: dict[str, object] = {"device": device}
    found |= p1_figure(throughput) | batching_figures(batching)
    found = {k: round(v, 3) if isinstance(v, float) else v for k, v in found.items()}
    for n, tok_s in sorted(batching["raw_aggregate_tok_s"].items(), key=lambda i: int(i[0])):
        found[f"gpu_tok_s_{n}"] = round(tok_s, 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="made with a CUDA build")
    where.add_argument("--python", type=Path, help="an interpreter with a GPU build already")
    where.add_argument("--cpu", action="store_true", help="this interpreter, no GPU asked for")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="GGUF (default: the real bench model)")
    which.add_argument("--tiny", action="store_true", help="the test suite's model, small runs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    plan = Plan(args.dry_run)
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}
    if args.cpu:
        python, device = Path(sys.executable), "CPU"
    else:
        if args.python:
            python = args.python
        else:
            python, env = prepare(plan, args.venv)
        device = plan.run([str(python), "-c", SEE_GPU], env=env).strip()
        if not device and not args.dry_run:
            sys.exit(
                f"bench.gpu: the llama.cpp of {python} sees no GPU (built without a GPU "
                "backend, the driver missing, or the CUDA build failed); nothing was measured"
            )
    results = Path(env.get("HEARTHBOT_BENCH_RESULTS") or args.venv / "results")
    env["HEARTHBOT_BENCH_RESULTS"] = str(results)
    model = ["--model", str(args.model)] if args.model else []
    suffix = "-tiny" if args.tiny else ""
    throughput_args = THROUGHPUT_SMOKE if args.tiny else model
    batching_args = BATCHING_SMOKE if args.tiny else model
    plan.run([str(python), "-m", "bench.throughput", *throughput_args], env=env)
    plan.run([str(python), "-m", "bench.batching", *batching_args], env=env)
    if args.dry_run:
        return
    throughput = json.loads((results / f"throughput{suffix}.json").read_text())
    batching = json.loads((results / f"batching{suffix}.json").read_text())
    print(json.dumps(figures(throughput, batching, device)))


if __name__ == "__main__":
    main()
