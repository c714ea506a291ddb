"""P1 and P6 with every layer on an NVIDIA GPU: one command for anyone with one.

    python3 -m bench.gpu [--venv DIR] [--model FILE] [--dry-run]

From a checkout on a Linux box with an NVIDIA GPU and its driver. Standard library only: it
makes its own venv (default ~/.cache/hearthbot-gpu-venv), installs hearthbot there with
llama.cpp built for CUDA (docker/cmake_args.sh cuda; llama-cpp-python rebuilt with
--force-reinstall --no-cache-dir once, a stamp remembers it), checks that llama.cpp sees a GPU
(bot.model.llama_cpp.devices), then runs bench.throughput (P1) and bench.batched_reference
--engine (P6) in that venv with the default n_gpu_layers (all of them) and prints one JSON line
like `make bench`'s. CUDA's compiler comes from the CUDA toolkit (nvcc on PATH or in
/usr/local/cuda), else from NVIDIA's wheels (nvidia-cuda-nvcc-cu12, -cuda-runtime-cu12,
-cublas-cu12), which it installs into the venv and links into one toolkit directory.

Expected output (the numbers depend on the card), after the two benchmarks' own tables:

    {"device": "CUDA0 — NVIDIA GeForce RTX 3060", "P1": 0.98, "P6": 0.93,
     "gpu_tok_s_1": 190.5, "gpu_tok_s_4": 520.2}

P1: the pipeline's tokens/s ÷ llama-cpp-python's create_completion on the same offloaded
model (goal ≥ 0.97); P6: the engine's aggregate tokens/s ÷ raw llama.cpp decoding 4 sequences
at once (goal ≥ 0.90). gpu_tok_s_N: raw llama.cpp's aggregate tokens/s at N sequences. It
cannot run on the development machines (no GPU): `--dry-run` prints what it would do.
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


def figures(throughput: dict, batched: dict, device: str) -> dict[str, object]:  # type: ignore[type-arg]
    """The JSON line: P1, P6 (at the largest N) and raw aggregate tokens/s."""
    ns = sorted(int(n) for n in batched["engine_ratio"])
    found: dict[str, object] = {
        "device": device,
        "P1": round(throughput["ratio_vs_create_completion"]["p50"], 3),
        "P6": round(batched["engine_ratio"][str(ns[-1])], 3),
    }
    for n in ns:
        found[f"gpu_tok_s_{n}"] = round(batched["aggregate_tok_s"][str(n)], 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--model", type=Path, help="GGUF (default: the real bench model)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    plan = Plan(args.dry_run)
    python, env = prepare(plan, args.venv)
    device = plan.run([str(python), "-c", SEE_GPU], env=env).strip()
    if not device and not args.dry_run:
        sys.exit("bench.gpu: llama.cpp sees no GPU (driver missing, or the CUDA build failed)")
    results = args.venv / "results"
    env["HEARTHBOT_BENCH_RESULTS"] = str(results)
    model = ["--model", str(args.model)] if args.model else []
    plan.run([str(python), "-m", "bench.throughput", *model], env=env)
    plan.run([str(python), "-m", "bench.batched_reference", "--engine", *model], env=env)
    if args.dry_run:
        return
    throughput = json.loads((results / "throughput.json").read_text())
    batched = json.loads((results / "batched_reference.json").read_text())
    print(json.dumps(figures(throughput, batched, device)))


if __name__ == "__main__":
    main()
