"""A real `python -m llama_cpp.server` (the llama-cpp-python[server] extra) serving a GGUF on
127.0.0.1, for the openai backend's tests and `hearthbot check`'s."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    model: Path,
    log_dir: Path,
    n_ctx: int = 2048,
    api_key: str | None = None,
    interrupt_requests: bool = False,
) -> Iterator[str]:
    """Start the server, wait until it answers, yield its base URL, stop it. By default a
    second request waits for the first: llama_cpp.server's own default (interrupt_requests)
    ends the running stream instead, as if the reply were complete."""
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    args += ["--n_threads", "2", "--verbose", "false"]
    args += ["--interrupt_requests", str(interrupt_requests).lower()]
    if api_key:
        args += ["--api_key", api_key]
    log_path = log_dir / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # answering (401 with an api_key): up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"llama_cpp.server did not start: {log_path.read_text()[-2000:]}")
