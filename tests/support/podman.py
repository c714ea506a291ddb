"""The Docker image built and run without a Docker engine or Docker Hub: podman (installed by
`make test`, as root) builds the Dockerfile as it is on a base image debootstrapped from the
Debian mirror, made once and kept in podman's image store.

How podman must run here: runc, not crun (crun fails on the hybrid cgroups of these machines),
cgroupfs (no systemd), and ulimits below the machine's hard limits (podman's defaults are above
them). Images are built in Docker's format: the OCI format has no HEALTHCHECK.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from support.bot_process import LoggedProcess
from support.fake_discord import until

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
# Debian's python3 is 3.11, like the Dockerfile's default python:3.11-slim-bookworm.
BASE_IMAGE = "localhost/hearthbot-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# pip's cache for builds: a source change reuses the llama-cpp-python wheel compiled in the
# builder stage the first time, instead of compiling llama.cpp again (minutes).
PIP_CACHE = Path.home() / ".cache" / "hearthbot-image-build" / "pip"
# The host's trust store, for the build only (nothing of it lands in a layer): where egress
# goes through a TLS-inspecting proxy, its CA is there, and pip must trust it to reach PyPI.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
WAIT_S = 120  # per step: two shared cores


def missing_tools() -> str | None:
    """Why the image cannot be built and run here, or None."""
    absent = [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} missing: `make container-tools` installs them"
    if os.geteuid() != 0:
        return "building and running the image takes root (rootful podman, debootstrap)"
    return None


def require_container_tools() -> None:
    """In a test: skip without the tools, but in CI (`CI=true`) fail, never skip."""
    import pytest

    reason = missing_tools()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must build and run the image: {reason}")
    pytest.skip(reason)


def podman(
    *args: str,
    input: str | None = None,
    stdin: IO[bytes] | None = None,
    timeout: float = WAIT_S,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`podman ARGS`, its output captured; a failure shows what podman said."""
    result = subprocess.run(
        [*PODMAN, *args],
        input=input,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


def base_image() -> str:
    """A minimal Debian bookworm with python3 and venv, made once (about a minute)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        minbase = ["--variant=minbase", "--include=python3,python3-venv"]
        subprocess.run(
            ["debootstrap", *minbase, "bookworm", str(rootfs), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        # As in Debian's own images: no package lists, no downloaded packages.
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for path in (rootfs / cache).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=600)
        assert tar.wait() == 0
    return BASE_IMAGE


def build_image(tag: str, scratch: Path) -> str:
    """The Dockerfile as it is, on the local base image. Unchanged sources reuse podman's
    layers (seconds); changed ones reuse pip's cache (no llama.cpp compile). The images that
    `tag` and its builder stage replace are removed (half a gigabyte a change)."""
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    pip_conf = scratch / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {HOST_CA}\n")  # pip before 24.2 ignores the system store
    options = [
        "--format", "docker",
        "--build-arg", f"PYTHON_IMAGE={base_image()}",
        "--volume", f"{PIP_CACHE}:/root/.cache/pip",
        "--volume", f"{HOST_CA}:{HOST_CA}:ro",
        "--volume", f"{pip_conf}:/etc/pip.conf:ro",
        *LIMITS,
    ]  # fmt: skip
    # The builder stage has a tag of its own, so that its layers stay in the cache when what
    # it replaces is removed.
    builder = f"{tag}-builder"
    before = {name: image_id(name) for name in (builder, tag)}
    podman("build", *options, "--target", "builder", "--tag", builder, str(ROOT), timeout=3600)
    podman("build", *options, "--tag", tag, str(ROOT), timeout=3600)
    for name, old in before.items():
        if old is not None and old != image_id(name):
            podman("rmi", old, check=False)  # with its layers that no other image uses
    return tag


def image_id(tag: str) -> str | None:
    found = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def image_size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6


def env_args(env: dict[str, str]) -> list[str]:
    return [f"--env={key}={value}" for key, value in env.items()]


class Container(LoggedProcess):
    """One `podman run` of the image, attached, its output in a log file; stopped as
    `docker stop` stops it. As a context manager: stopped and removed on the way out."""

    def __init__(self, image: str, log: Path, *options: str, command: tuple[str, ...] = ()):
        self.what = "the container"
        self.name = f"hearthbot-test-{secrets.token_hex(4)}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*PODMAN, "run", "--rm", "--name", self.name, *LIMITS, *options, image, *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.returncode: int | None = None

    async def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`podman ARGS` off the event loop: the fake Discord in it must keep serving."""
        return await asyncio.to_thread(podman, *args, check=False)

    async def host_pid(self) -> int:
        return int((await self.podman("inspect", "--format", "{{.State.Pid}}", self.name)).stdout)

    async def stop(self) -> float:
        """`docker stop`: SIGTERM, SIGKILL after 10 s. Returns how long the stop took."""
        started = time.monotonic()
        await self.podman("stop", "--time", "10", self.name)
        await until(lambda: self.proc.poll() is not None, 30, "podman run to return")
        self.returncode = self.proc.returncode
        return time.monotonic() - started

    async def __aenter__(self) -> Container:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            await self.stop()
        await self.podman("rm", "--force", "--ignore", self.name)
