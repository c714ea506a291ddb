"""`bot.model.pull` against a fake hub on 127.0.0.1: download, resume, checksum, errors."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import bot.model.pull
from bot.model.pull import PullError, find_local_model, partial_path, pull
from support.fake_hub import COMMIT, FakeHub

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


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transfers in 1 KB chunks, with no pause between the library's in-run retries.

    http_get writes what it has read in chunks of DOWNLOAD_CHUNK_SIZE (10 MB by default); the
    bytes of an unfinished chunk are lost when the transfer stops, so small chunks make the
    size of a .part predictable. Its retries sleep 1 s each: skip that to keep the tests fast.
    """
    from huggingface_hub import constants, file_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))


def use(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)


def ranges(hub: FakeHub, since: int = 0) -> list[str | None]:
    """The Range header of each GET, from the `since`-th request on."""
    return [r.range for r in hub.requests[since:] if r.method == "GET"]


def test_pull_downloads_the_file(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path == models_dir / FILE
    assert path.read_bytes() == DATA
    assert find_local_model(models_dir) == path
    # One HEAD (checksum, size, commit), then one GET pinned to that commit.
    assert [(r.method, r.path) for r in hub.requests] == [
        ("HEAD", f"/{REPO}/resolve/main/{FILE}"),
        ("GET", f"/{REPO}/resolve/{COMMIT}/{FILE}"),
    ]
    assert [p.name for p in models_dir.iterdir()] == [FILE]  # no .part, no .cache left


def test_second_pull_does_not_download_again(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        pull(REPO, FILE, models_dir, progress=False)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert len(hub.gets()) == 1


@pytest.mark.usefixtures("small_chunks")
def test_pull_resumes_after_a_dropped_connection(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        hub.drop_gets, hub.drop_after = 1, 3 * 1024
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == [None, "bytes=3072-"]  # the library's in-run retry


@pytest.mark.usefixtures("small_chunks")
def test_a_failed_pull_resumes_on_the_next_run(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partial_path(models_dir / FILE)
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        hub.cut_at = 3 * 1024  # the network goes down there; the in-run retries give up
        with pytest.raises(PullError) as caught:
            pull(REPO, FILE, models_dir, progress=False)
        first_run = len(hub.requests)

        message = str(caught.value)
        assert message.startswith(f"download of {REPO}/{FILE} failed: ")
        assert message.endswith("run the command again to resume") and "\n" not in message
        assert part.read_bytes() == DATA[:3072]
        assert not (models_dir / FILE).exists()
        assert find_local_model(models_dir) is None
        assert ranges(hub)[0] is None and set(ranges(hub)[1:]) == {"bytes=3072-"}

        hub.cut_at = None  # the network is back
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub, since=first_run) == ["bytes=3072-"]
    assert not part.exists()


def test_a_part_larger_than_the_file_starts_over(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partial_path(models_dir / FILE)
    models_dir.mkdir(parents=True)
    part.write_bytes(DATA + b"left over from something else")
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == [None]
    assert not part.exists()


def test_a_corrupt_part_is_deleted_and_the_next_pull_starts_over(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partial_path(models_dir / FILE)
    models_dir.mkdir(parents=True)
    part.write_bytes(b"\0" * 1024)  # the right size for a prefix, the wrong bytes
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with pytest.raises(PullError, match=f"^checksum mismatch for {FILE}: .* deleted"):
            pull(REPO, FILE, models_dir, progress=False)
        assert not part.exists()
        assert not (models_dir / FILE).exists()
        assert ranges(hub) == ["bytes=1024-"]

        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == ["bytes=1024-", None]


def test_a_server_that_ignores_range_gets_a_full_download(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partial_path(models_dir / FILE)
    models_dir.mkdir(parents=True)
    part.write_bytes(DATA[:1024])
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        hub.ignore_range = True  # 200 and the whole file: appending it would corrupt the file
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == ["bytes=1024-"]
    assert not part.exists()


@pytest.mark.usefixtures("small_chunks")
def test_ctrl_c_keeps_the_part_for_the_next_run(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import file_download

    class CtrlCAt2K:
        """A progress bar that presses Ctrl-C when the second KB arrives, before it is written."""

        def __init__(self, *, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial

        def __enter__(self) -> CtrlCAt2K:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: int) -> None:
            self.n += n
            if self.n >= 2048:
                raise KeyboardInterrupt

    real_http_get = file_download.http_get

    def http_get_with_ctrl_c(*args: Any, **kwargs: Any) -> None:
        real_http_get(*args, **{**kwargs, "tqdm_class": CtrlCAt2K})

    part = partial_path(models_dir / FILE)
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with monkeypatch.context() as patch:
            patch.setattr(file_download, "http_get", http_get_with_ctrl_c)
            with pytest.raises(KeyboardInterrupt):
                pull(REPO, FILE, models_dir, progress=False)
        assert part.read_bytes() == DATA[:1024]
        assert find_local_model(models_dir) is None

        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == [None, "bytes=1024-"]
    assert not part.exists()


def test_an_existing_correct_file_is_not_downloaded_again(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir.mkdir(parents=True)
    (models_dir / FILE).write_bytes(DATA)
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert [r.method for r in hub.requests] == ["HEAD"]


def test_an_existing_wrong_file_is_downloaded_again(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir.mkdir(parents=True)
    (models_dir / FILE).write_bytes(DATA[:-1] + b"?")  # e.g. an older version of the model
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert ranges(hub) == [None]


def test_not_enough_disk_space_is_refused_before_downloading(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models_dir.mkdir(parents=True)
    part = partial_path(models_dir / FILE)
    part.write_bytes(DATA[:1000])
    usage = shutil.disk_usage(models_dir)
    free = 4000
    monkeypatch.setattr(bot.model.pull.shutil, "disk_usage", lambda path: usage._replace(free=free))
    with FakeHub({(REPO, FILE): DATA}) as hub:
        use(hub, monkeypatch)
        with pytest.raises(PullError) as caught:
            pull(REPO, FILE, models_dir, progress=False)
        message = str(caught.value)
        assert message.startswith(
            f"not enough disk space for {FILE}: 5.1 kB more needed, only 4.0 kB free in "
        )
        assert str(models_dir) in message and "\n" not in message
        assert hub.gets() == []
        assert part.read_bytes() == DATA[:1000]

        # Only what is still missing has to fit, not the whole file (6.1 kB).
        free = len(DATA) - 1000
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA


def test_a_second_pull_of_the_same_file_at_once_is_refused(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    models_dir.mkdir(parents=True)
    part = partial_path(models_dir / FILE)
    with FakeHub({(REPO, FILE): DATA}) as hub, part.open("ab") as other:
        use(hub, monkeypatch)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a pull in another process
        with pytest.raises(PullError, match="another pull is already downloading"):
            pull(REPO, FILE, models_dir, progress=False)

    assert hub.gets() == []


def test_pull_through_a_cdn_redirect_keeps_the_token_on_the_hub(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", token)
    with FakeHub({(REPO, FILE): DATA}, cdn=True) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    # The GET goes to the hub (pinned commit), which redirects it to the CDN.
    assert [(r.server, r.method) for r in hub.requests] == [
        ("hub", "HEAD"),
        ("hub", "GET"),
        ("cdn", "GET"),
    ]
    assert all(r.authorized for r in hub.requests if r.server == "hub")
    assert not any(r.authorized for r in hub.requests if r.server == "cdn")


def test_a_resume_through_a_cdn_redirect_asks_the_cdn_for_the_rest(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partial_path(models_dir / FILE)
    models_dir.mkdir(parents=True)
    part.write_bytes(DATA[:1024])
    with FakeHub({(REPO, FILE): DATA}, cdn=True) as hub:
        use(hub, monkeypatch)
        path = pull(REPO, FILE, models_dir, progress=False)

    assert path.read_bytes() == DATA
    assert [(r.server, r.range) for r in hub.gets()] == [
        ("hub", "bytes=1024-"),
        ("cdn", "bytes=1024-"),
    ]
    assert not part.exists()


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
    partial_path(tmp_path / "newer.gguf").write_bytes(DATA)
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "dir.gguf").mkdir()

    assert find_local_model(tmp_path) == new


def test_pull_command_makes_data_dir_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.app.cli import pull as pull_command
    from bot.settings import load_settings

    data = tmp_path / "data"
    settings = load_settings(None, bot={"data_dir": data}, model={"pull_repo": REPO})
    before = os.umask(0o022)  # as `make run --pull-missing` on a fresh machine
    try:
        with FakeHub({(REPO, FILE): DATA}) as hub:
            use(hub, monkeypatch)
            assert pull_command(settings, None, FILE) == 0
    finally:
        os.umask(before)
    assert (data / "models" / FILE).read_bytes() == DATA
    assert os.stat(data).st_mode & 0o777 == 0o700
