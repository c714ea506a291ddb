"""Building llama.cpp for a GPU: docker/cmake_args.sh's flags, and `make run GPU=...`'s
forced rebuild of llama-cpp-python alone, once per change of variant (a stamp per variant).

make runs for real; the venv's python and hearthbot are stand-ins that record what they were
asked (pip would download and compile llama.cpp, for a GPU this machine does not have)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.3.36"

# Records each call and the CMAKE_ARGS it saw; answers importlib.metadata's version question;
# fails to import libmtmd's binding while the venv holds a file named no-mtmd.
PYTHON = f"""#!/bin/sh
echo "python $* | CMAKE_ARGS=$CMAKE_ARGS" >> "$(dirname "$0")/../calls"
case "$*" in *importlib.metadata*) echo {VERSION} ;; esac
case "$*" in *mtmd_cpp*) test ! -e "$(dirname "$0")/../no-mtmd" ;; esac
"""


@pytest.mark.parametrize(
    ("variant", "flag"),
    [
        ("cpu", ""),
        ("", ""),
        ("cuda", "-DGGML_CUDA=on"),
        ("vulkan", "-DGGML_VULKAN=on"),
        ("metal", "-DGGML_METAL=on"),
        ("rocm", "-DGGML_HIP=on"),
    ],
)
def test_cmake_args(variant: str, flag: str) -> None:
    out = subprocess.run(
        ["sh", "docker/cmake_args.sh", variant],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["-DLLAVA_BUILD=ON", *([flag] if flag else [])]


def test_an_unknown_gpu_is_named() -> None:
    out = subprocess.run(
        ["sh", "docker/cmake_args.sh", "opencl"], cwd=ROOT, capture_output=True, text=True
    )
    assert (
        out.returncode == 2
        and "GPU must be cuda, vulkan, metal or rocm (got 'opencl')" in out.stderr
    )
    made = subprocess.run(
        ["make", "-n", "run", "GPU=opencl"], cwd=ROOT, capture_output=True, text=True
    )
    assert (
        made.returncode != 0
        and "GPU must be cuda, vulkan, metal or rocm (got opencl)" in made.stderr
    )


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A venv as `make` left it: installed (the stamp newer than pyproject.toml)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, text in (("python", PYTHON), ("hearthbot", "#!/bin/sh\n")):
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    (venv / ".installed").touch()
    return venv


def make_run(venv: Path, gpu: str | None = None) -> list[str]:
    """`make run [GPU=...]`; the pip installs it made."""
    calls = venv / "calls"
    calls.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "GPU", "MAKEFLAGS")}
    args = ["make", "--no-print-directory", "run", f"VENV={venv}"] + ([f"GPU={gpu}"] if gpu else [])
    subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [line for line in lines if " -m pip " in line]


def stamps(venv: Path) -> list[str]:
    return sorted(p.name for p in venv.glob(".llama-*"))


def test_a_gpu_variant_is_rebuilt_once_and_back(venv: Path) -> None:
    assert make_run(venv) == []  # a new venv holds the CPU build already
    assert stamps(venv) == [".llama-cpu"]

    (cuda,) = make_run(venv, "cuda")
    assert (
        f"-m pip install --quiet --force-reinstall --no-cache-dir --no-deps "
        f"llama-cpp-python=={VERSION} |" in cuda
    )
    assert cuda.endswith("CMAKE_ARGS=-DLLAVA_BUILD=ON -DGGML_CUDA=on")
    assert stamps(venv) == [".llama-cuda"]
    assert make_run(venv, "cuda") == []  # built: the stamp holds

    (vulkan,) = make_run(venv, "vulkan")
    assert vulkan.endswith("CMAKE_ARGS=-DLLAVA_BUILD=ON -DGGML_VULKAN=on")
    (cpu,) = make_run(venv)  # back to the CPU: rebuilt too
    assert "--force-reinstall --no-cache-dir" in cpu and cpu.endswith("CMAKE_ARGS=-DLLAVA_BUILD=ON")
    assert stamps(venv) == [".llama-cpu"]


def test_a_build_without_libmtmd_is_rebuilt_once(venv: Path) -> None:
    """A venv made before libmtmd was built (or from a wheel pip cached then) is rebuilt for
    the CPU, past the cache; afterwards the stamp holds."""
    (venv / "no-mtmd").touch()
    (cpu,) = make_run(venv)
    assert (
        f"-m pip install --quiet --force-reinstall --no-cache-dir --no-deps "
        f"llama-cpp-python=={VERSION} |" in cpu
    )
    assert cpu.endswith("CMAKE_ARGS=-DLLAVA_BUILD=ON")
    assert stamps(venv) == [".llama-cpu"]
    (venv / "no-mtmd").unlink()  # what the rebuild did
    assert make_run(venv) == []
