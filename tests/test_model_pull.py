"""`bot.model_pull` against a fake hub on 127.0.0.1: download, resume, checksum, errors."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.model_pull import PullError, find_local_model, pull
from fake_hub import COMMIT, FakeHub

REPO = "org/tiny-GGUF"
FILE = "tiny-q4_k_m.gguf"
# A few KB that start like a GGUF; no real model needed to test the transfer.
DATA = b"GGUF" + bytes(range(256)) * 24


@pytest.fixture(autouse=True)
def isolated_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep huggingface_hub away from ~/.cache/huggingface, real tokens and the real hub.

    The library reads most settings into `constants` at import time, so besides the env vars
    the already-imported values are patched too.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 2)
    # Building the user agent would otherwise fetch {ENDPOINT}/api/agent-harnesses (huggingface.co).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    yield


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "models"


def use(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)


def test_pull_downloads_the_file(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path == models_dir / FILE
    assert path.read_bytes() == DATA
    assert find_local_model(models_dir) == path
    # One HEAD of ours (checksum + commit), one of the library (pinned to that commit), one GET.
    assert [(r.method, r.path) for r in hub.requests] == [
        ("HEAD", f"/{REPO}/resolve/main/{FILE}"),
        ("HEAD", f"/{REPO}/resolve/{COMMIT}/{FILE}"),
        ("GET", f"/{REPO}/resolve/{COMMIT}/{FILE}"),
    ]
    assert not [p for p in models_dir.rglob("*") if p.name.endswith(".incomplete")]


def test_second_pull_does_not_download_again(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        pull(REPO, FILE, models_dir, progress=False)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert len(hub.gets()) == 1


def test_pull_resumes_after_a_dropped_connection(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # The library writes what it has read in chunks of this size (10 MB by default); bytes of
    # an unfinished chunk are lost when the connection drops, so make chunks small here.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        hub.drop_gets, hub.drop_after = 1, 3 * 1024
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert [g.range for g in hub.gets()] == [None, "bytes=3072-"]


def test_pull_through_a_cdn_redirect_keeps_the_token_on_the_hub(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", token)
    with FakeHub({(REPO, FILE): DATA}, cdn=True) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    (get,) = hub.gets()
    assert get.server == "cdn" and not get.authorized
    assert all(r.authorized for r in hub.requests if r.server == "hub")


def test_checksum_mismatch_deletes_the_file(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        hub.corrupt = True
        with pytest.raises(PullError) as caught:
            pull(REPO, FILE, models_dir, progress=False)

    message = str(caught.value)
    assert "checksum mismatch" in message and FILE in message
    assert "\n" not in message
    assert not (models_dir / FILE).exists()
    assert find_local_model(models_dir) is None


def test_unknown_file_is_one_line(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with pytest.raises(PullError) as caught:
            pull(REPO, "missing-q8_0.gguf", models_dir, progress=False)

    message = str(caught.value)
    assert message == f"file missing-q8_0.gguf not found in repo {REPO}"
    assert [r.method for r in hub.requests] == ["HEAD"]


def test_unknown_repo_is_one_line(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with pytest.raises(PullError) as caught:
            pull("nobody/nothing-GGUF", FILE, models_dir, progress=False)

    message = str(caught.value)
    assert "nobody/nothing-GGUF not found" in message and "\n" not in message


def test_no_hub_listening_fails_fast(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")

    started = time.monotonic()
    with pytest.raises(PullError) as caught:
        pull(REPO, FILE, models_dir, progress=False)

    message = str(caught.value)
    assert time.monotonic() - started < 3
    assert message.startswith(f"cannot reach the Hugging Face hub (http://127.0.0.1:{port})")
    assert "connection refused" in message.lower() and "HF_ENDPOINT" in message
    assert "\n" not in message


def test_offline_mode_is_a_clear_error(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PullError, match="HF_HUB_OFFLINE"):
        pull(REPO, FILE, models_dir, progress=False)


@pytest.mark.parametrize(
    ("repo", "filename", "expected"),
    [
        (REPO, "model.safetensors", "not a .gguf file"),
        (REPO, "../evil.gguf", "bad file name"),
        ("no-slash", FILE, "bad repo name"),
    ],
)
def test_bad_names_are_refused_before_any_request(
    repo: str, filename: str, expected: str, models_dir: Path
) -> None:
    with pytest.raises(PullError, match=expected):
        pull(repo, filename, models_dir, progress=False)


def test_errors_never_show_the_token(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "s3cret" * 6
    monkeypatch.setenv("HF_TOKEN", token)
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with pytest.raises(PullError) as caught:
            pull(REPO, "missing.gguf", models_dir, progress=False)
    assert token not in str(caught.value)


def test_find_local_model_picks_the_newest_complete_gguf(tmp_path: Path) -> None:
    assert find_local_model(tmp_path / "absent") is None
    old, new = tmp_path / "old.gguf", tmp_path / "new.GGUF"
    old.write_bytes(DATA)
    new.write_bytes(DATA)
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    partial = tmp_path / ".cache" / "huggingface" / "download"
    partial.mkdir(parents=True)
    (partial / "abc.1234.incomplete").write_bytes(DATA)
    (tmp_path / "newest.gguf.incomplete").write_bytes(DATA)
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "dir.gguf").mkdir()

    assert find_local_model(tmp_path) == new
