"""`hearthbot model pull`: fetch a GGUF from the Hugging Face hub into data_dir/models/.

A pull that is interrupted (Ctrl-C, a crash, a network outage) resumes on the next run:

1. One HEAD request (no retries: fail fast when the hub is unreachable) gives the file's
   checksum (the hub's etag: sha256 for LFS files), its size and the commit, which we pin so
   the checksum and the bytes come from the same commit.
2. A file already at models_dir/filename that matches the checksum is kept as it is.
3. The bytes go to models_dir/.<filename>.part (hidden, so `find_local_model` ignores it). If
   it exists, the transfer resumes with `Range: bytes=<size>-`; huggingface_hub's `http_get`
   does the HTTP, its own in-run retries, the progress bar, and starts over when a server
   ignores the Range. The .part is kept on any failure, so the next run carries on from it.
4. The finished .part is checked against the checksum (and deleted if it does not match), then
   renamed into place atomically.

Every failure is a one-line PullError, never a traceback, never a token. huggingface_hub is
imported inside `pull()`: it takes a while to import and `find_local_model` is on the daemon's
start-up path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import IO, Any

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")
_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_TRUE = {"1", "ON", "YES", "TRUE"}
_MAX_REASON = 200


class PullError(Exception):
    """A pull failed; the message is one human-readable line saying why and what to do."""


def find_local_model(models_dir: Path) -> Path | None:
    """The newest `*.gguf` directly in models_dir, or None.

    Partial downloads never match: they are hidden files (`.<name>.part`) until complete.
    """
    try:
        entries = list(models_dir.iterdir())
    except OSError:
        return None
    found: list[tuple[float, Path]] = []
    for entry in entries:
        if entry.name.startswith(".") or entry.suffix.lower() != ".gguf":
            continue
        try:
            stat = entry.stat()  # follows symlinks: a link to a model elsewhere counts
        except OSError:
            continue
        if entry.is_file() and stat.st_size > 0:
            found.append((stat.st_mtime, entry))
    if not found:
        return None
    return max(found, key=lambda item: (item[0], item[1].name))[1]


def partial_path(path: Path) -> Path:
    """Where the download of `path` collects its bytes until it is complete and verified."""
    return path.with_name(f".{path.name}.part")


def pull(
    repo: str,
    filename: str,
    models_dir: Path,
    *,
    progress: bool = True,
    expected_sha256: str | None = None,
) -> Path:
    """Download `filename` from hub repo `repo` into models_dir; return models_dir/filename.

    Honours HF_ENDPOINT (`hub_endpoint`), HF_TOKEN and HF_HUB_OFFLINE. A file already there
    that matches the hub's checksum is not downloaded again; an interrupted download resumes.
    `progress` shows a bar (on a terminal only). `expected_sha256` (a catalog entry's): the
    hub's file must be exactly that one, else nothing is downloaded; the bytes are checked too.
    """
    _check_names(repo, filename)
    if _offline():
        raise PullError(
            f"HF_HUB_OFFLINE is set: cannot download {repo}/{filename} — unset it to pull"
        )
    endpoint = hub_endpoint()
    path = models_dir / filename
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"cannot create {path.parent}: {reason(e)}") from e
    stage = "reach"
    try:
        etag, commit, size = _remote_file(repo, filename, endpoint)
        if expected_sha256 is not None:
            _check_listed(repo, filename, etag, expected_sha256.lower())
        if path.is_file() and _digest(path, etag) == etag:
            return path
        stage = "download"
        _download(repo, filename, path, endpoint, commit, etag, size, progress)
    except PullError:
        raise
    except Exception as e:
        raise _explain(e, stage=stage, repo=repo, filename=filename, endpoint=endpoint) from e
    return path


def hub_endpoint() -> str:
    """HF_ENDPOINT, read now (the library reads it once, at import), or the hub's address."""
    try:
        from huggingface_hub import constants
    except ImportError:
        raise PullError("huggingface_hub is not installed — pip install huggingface_hub") from None
    return (os.environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or constants.ENDPOINT


def _check_names(repo: str, filename: str) -> None:
    if not filename.lower().endswith(".gguf"):
        raise PullError(f"{filename} is not a .gguf file: hearthbot can only run GGUF models")
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    if filename.startswith(("/", "\\")) or ".." in parts or ":" in filename:
        raise PullError(f"bad file name {filename}: use the file's path inside the repo")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise PullError(f"bad repo name {repo!r}: expected owner/name, e.g. Qwen/Qwen2.5-1.5B-GGUF")


def _check_listed(repo: str, filename: str, etag: str, expected: str) -> None:
    """Refuse a hub file that is not the one the catalog lists (before any byte moves)."""
    if not _SHA256.fullmatch(etag):
        raise PullError(
            f"the hub sent no sha256 for {repo}/{filename}, so it cannot be checked against "
            "the model catalog — nothing was downloaded"
        )
    if etag != expected:
        raise PullError(
            f"{repo}/{filename} on the hub has sha256 {etag[:16]}…, but the model catalog "
            f"lists {expected[:16]}… — it is not the file the catalog vouches for, so nothing "
            "was downloaded (pull it by repo and file name to take it anyway)"
        )


def _offline() -> bool:
    # The library reads HF_HUB_OFFLINE once at import; look again so a later setting counts.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.upper() in _TRUE


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def _remote_file(repo: str, filename: str, endpoint: str) -> tuple[str, str, int | None]:
    """(etag, commit, size) of the file on the hub's main branch, from a single HEAD request."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(
        hf_hub_url(repo, filename, endpoint=endpoint),
        timeout=_etag_timeout(),
        endpoint=endpoint,
        retry_on_errors=False,  # fail now; the user can simply run the command again
    )
    if not meta.commit_hash:
        raise PullError(
            f"{endpoint} did not answer like a Hugging Face hub (no X-Repo-Commit header) "
            "— check HF_ENDPOINT and any proxy"
        )
    etag = (meta.etag or "").lower()
    if not (_SHA256.fullmatch(etag) or _GIT_SHA1.fullmatch(etag)):
        raise PullError(
            f"the hub at {endpoint} sent no checksum for {repo}/{filename}, "
            "so the download could not be verified — check HF_ENDPOINT"
        )
    return etag, meta.commit_hash, meta.size


def _download(
    repo: str,
    filename: str,
    path: Path,
    endpoint: str,
    commit: str,
    etag: str,
    size: int | None,
    progress: bool,
) -> None:
    """Fill path's .part from where an earlier run stopped, verify it, move it to `path`."""
    from huggingface_hub import file_download, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, silent_tqdm

    part = partial_path(path)
    headers = build_hf_headers()  # sends HF_TOKEN; httpx drops it on the redirect to the CDN
    headers["Accept-Encoding"] = "identity"  # a compressed answer would ignore the Range
    # Append mode never truncates what an earlier run left; http_get writes after it.
    with part.open("ab") as f:
        _lock(f, path)
        done = f.seek(0, os.SEEK_END)  # measured under the lock
        if size is None or done > size:  # nothing to check a prefix against, or not one
            f.seek(0)
            f.truncate()
            done = 0
        if size is not None:
            _check_space(part.parent, size - done, filename)
        file_download.http_get(
            hf_hub_url(repo, filename, revision=commit, endpoint=endpoint),
            f,
            resume_size=done,
            headers=headers,
            expected_size=size,
            displayed_filename=path.name,
            tqdm_class=None if progress else silent_tqdm,  # the library's bar: a TTY only
        )
        f.flush()
        actual = _digest(part, etag)  # still under the lock: no other pull touches the .part
    if actual != etag:
        with contextlib.suppress(OSError):  # the message below still says the file is bad
            part.unlink()
        kind = "sha256" if _SHA256.fullmatch(etag) else "git sha1"
        raise PullError(
            f"checksum mismatch for {filename}: expected {kind} {etag[:16]}…, got "
            f"{actual[:16]}… — the download was corrupted and has been deleted; "
            "run the command again"
        )
    os.replace(part, path)


def _lock(f: IO[bytes], path: Path) -> None:
    """Refuse a second pull of the same file at the same time: both would append to the .part."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the checksum still catches a mixed-up file
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PullError(
            f"another pull is already downloading {path.name} into {path.parent} — "
            "wait for it to finish"
        ) from None
    except OSError:
        pass  # a filesystem without locks (some NFS): go on unlocked


def _check_space(directory: Path, needed: int, filename: str) -> None:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed:
        raise PullError(
            f"not enough disk space for {filename}: {_size(needed)} more needed, only "
            f"{_size(free)} free in {directory} — free some space and run the command again"
        )


def _size(n: float) -> str:
    """'812 bytes', '5.1 kB', '4.7 GB'."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 999.95 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def _digest(path: Path, etag: str) -> str:
    """The file's digest in the etag's kind: sha256 for LFS files, git blob sha1 otherwise."""
    with path.open("rb") as f:
        if _SHA256.fullmatch(etag):
            digest = hashlib.sha256()
        else:  # a non-LFS file's etag is its git blob id: sha1 of "blob <size>\0" + content
            digest = hashlib.sha1(f"blob {os.fstat(f.fileno()).st_size}\0".encode())
        return hashlib.file_digest(f, lambda: digest).hexdigest()


def _explain(e: BaseException, *, stage: str, repo: str, filename: str, endpoint: str) -> PullError:
    """Turn a huggingface_hub / network / OS error into a one-line PullError."""
    import httpx2
    from huggingface_hub import errors

    where = f"{repo}/{filename}"
    if isinstance(e, errors.OfflineModeIsEnabled):
        return PullError(f"HF_HUB_OFFLINE is set: cannot download {where} — unset it to pull")
    if isinstance(e, errors.GatedRepoError):
        return PullError(
            f"repo {repo} is gated: accept its terms on the hub page, then set HF_TOKEN"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return PullError(f"repo {repo} not found on {endpoint} (if it is private, set HF_TOKEN)")
    if isinstance(e, errors.RevisionNotFoundError):
        return PullError(f"revision not found in repo {repo}")
    if isinstance(e, errors.RemoteEntryNotFoundError):
        return PullError(f"file {filename} not found in repo {repo}")
    if isinstance(e, errors.HfHubHTTPError):
        return _http_status_error(e, repo=repo, where=where)
    if isinstance(e, httpx2.RequestError):
        why = reason(e) or type(e).__name__
        if stage == "reach":
            return PullError(
                f"cannot reach the Hugging Face hub ({endpoint}): {why} "
                "— check the network or set HF_ENDPOINT"
            )
        return PullError(f"download of {where} failed: {why} — run the command again to resume")
    if isinstance(e, OSError):
        return PullError(f"download of {where} failed: {reason(e)}")
    if isinstance(e, ValueError):
        return PullError(f"cannot pull {where}: {reason(e)}")
    return PullError(f"download of {where} failed: {type(e).__name__}: {reason(e)}")


def _http_status_error(e: Any, *, repo: str, where: str) -> PullError:
    status = getattr(e.response, "status_code", None)
    if status in (401, 403):
        return PullError(
            f"the hub refused access to {repo} (HTTP {status}) — set HF_TOKEN to a token "
            "that can read it"
        )
    if status == 429:
        return PullError(f"the hub is rate-limiting requests (HTTP 429) — try {where} again later")
    if status is not None and status >= 500:
        return PullError(f"the hub failed (HTTP {status}) while serving {where} — try again later")
    detail = f": {_clean(e.server_message)}" if e.server_message else ""
    return PullError(f"the hub answered HTTP {status} for {where}{detail}")


def reason(e: BaseException) -> str:
    """A short lower-case reason: 'connection refused', 'timed out', 'no space left on device'."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    text = _ERRNO_PREFIX.sub("", _clean(text))
    return text[:1].lower() + text[1:]


def _clean(text: str) -> str:
    """First non-empty line, whitespace collapsed, any token blanked, length capped."""
    for secret in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")):
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_LIKE.sub("***", text)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = " ".join(line.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 1] + "…"
