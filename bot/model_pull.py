"""`hearthbot model pull`: fetch a GGUF from the Hugging Face hub into data_dir/models/.

huggingface_hub does the transfer (progress bar, the local_dir layout, and retries that resume
a dropped connection with a Range request). Around it we add:

- one HEAD request first: it fails fast when the hub is unreachable (the library would retry
  with backoff for ~20 s), gives us the file's sha256 (the hub's etag of an LFS file) and the
  commit, which we pin so the checksum and the bytes come from the same commit;
- a sha256 check of the finished file (the library only checks the size);
- every failure as a one-line PullError, never a traceback, never a token.

huggingface_hub is imported inside `pull()`: it takes a while to import and `find_local_model`
is on the daemon's start-up path.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

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

    Partial downloads never match: huggingface_hub writes them under models_dir/.cache/ with
    an `.incomplete` suffix and renames them into place only when complete.
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


def pull(repo: str, filename: str, models_dir: Path, *, progress: bool = True) -> Path:
    """Download `filename` from hub repo `repo` into models_dir; return models_dir/filename.

    Honours HF_ENDPOINT (read now, not at import), HF_TOKEN and HF_HUB_OFFLINE. A file that is
    already there and matches the hub's checksum is not downloaded again.
    """
    _check_names(repo, filename)
    where = f"{repo}/{filename}"
    if _offline():
        raise PullError(f"HF_HUB_OFFLINE is set: cannot download {where} — unset it to pull")
    try:
        import huggingface_hub as hf
        import huggingface_hub.errors  # makes hf.errors an attribute, for _classes
        from huggingface_hub import constants
    except ImportError:
        raise PullError("huggingface_hub is not installed — pip install huggingface_hub") from None

    endpoint = (os.environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or constants.ENDPOINT
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"cannot create {models_dir}: {_reason(e)}") from e

    stage = "reach"
    try:
        etag, commit = _remote_checksum(hf, repo, filename, endpoint)
        stage = "download"
        hf.hf_hub_download(
            repo_id=repo,
            filename=filename,
            revision=commit,
            local_dir=models_dir,
            endpoint=endpoint,
            etag_timeout=_etag_timeout(),
            tqdm_class=None if progress else _silent_tqdm(),
        )
    except PullError:
        raise
    except Exception as e:
        raise _explain(e, hf, stage=stage, repo=repo, filename=filename, endpoint=endpoint) from e

    path = models_dir / filename
    _verify(path, etag, filename)
    return path


def _check_names(repo: str, filename: str) -> None:
    if not filename.lower().endswith(".gguf"):
        raise PullError(f"{filename} is not a .gguf file: hearthbot can only run GGUF models")
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    if filename.startswith(("/", "\\")) or ".." in parts or ":" in filename:
        raise PullError(f"bad file name {filename}: use the file's path inside the repo")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise PullError(f"bad repo name {repo!r}: expected owner/name, e.g. Qwen/Qwen2.5-1.5B-GGUF")


def _offline() -> bool:
    # The library reads HF_HUB_OFFLINE once at import; look again so a later setting counts.
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.upper() in _TRUE


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def _remote_checksum(hf: Any, repo: str, filename: str, endpoint: str) -> tuple[str, str]:
    """(etag, commit) of the file on the hub's main branch, from a single HEAD request."""
    url = hf.hf_hub_url(repo, filename, endpoint=endpoint)
    kwargs: dict[str, Any] = {"url": url, "timeout": _etag_timeout()}
    params = inspect.signature(hf.get_hf_file_metadata).parameters
    if "endpoint" in params:
        kwargs["endpoint"] = endpoint
    if "retry_on_errors" in params:
        kwargs["retry_on_errors"] = False  # fail now; the user can simply run the command again
    meta = hf.get_hf_file_metadata(**kwargs)
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
    return etag, meta.commit_hash


def _verify(path: Path, etag: str, filename: str) -> None:
    """Compare the file with the hub's etag: sha256 for LFS files, git blob sha1 otherwise."""
    try:
        with path.open("rb") as f:
            if _SHA256.fullmatch(etag):
                kind, actual = "sha256", hashlib.file_digest(f, "sha256").hexdigest()
            else:
                # A non-LFS file's etag is its git blob id: sha1 of "blob <size>\0" + content.
                digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                kind, actual = "git sha1", digest.hexdigest()
    except OSError as e:
        raise PullError(f"cannot read {path} to verify it: {_reason(e)}") from e
    if actual == etag:
        return
    with contextlib.suppress(OSError):  # the message below still says the file is bad
        path.unlink()
    raise PullError(
        f"checksum mismatch for {filename}: expected {kind} {etag[:16]}…, got {actual[:16]}… "
        "— the download was corrupted and has been deleted; run the command again"
    )


def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc, type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name, plain tqdm not
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def _classes(hf: Any, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes by name, from whichever module this huggingface_hub version has."""
    found: list[type[BaseException]] = []
    for module_name in ("errors", "utils"):
        module = getattr(hf, module_name, None)
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
                found.append(cls)
    return tuple(found)


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 2.x uses httpx2, 1.x httpx, 0.x requests: catch whichever is there.
    found: list[type[BaseException]] = []
    try:
        import httpx2

        found.append(httpx2.RequestError)
    except ImportError:
        pass
    try:
        import httpx

        found.append(httpx.RequestError)
    except ImportError:
        pass
    try:
        import requests

        found.append(requests.RequestException)
    except ImportError:
        pass
    return tuple(found)


def _explain(
    e: BaseException, hf: Any, *, stage: str, repo: str, filename: str, endpoint: str
) -> PullError:
    """Turn a huggingface_hub / network / OS error into a one-line PullError."""
    where = f"{repo}/{filename}"
    unreachable = "check the network or set HF_ENDPOINT"
    http_error = _classes(hf, "HfHubHTTPError")
    if isinstance(e, _classes(hf, "OfflineModeIsEnabled")):
        return PullError(f"HF_HUB_OFFLINE is set: cannot download {where} — unset it to pull")
    if isinstance(e, _classes(hf, "GatedRepoError")):
        return PullError(
            f"repo {repo} is gated: accept its terms on the hub page, then set HF_TOKEN"
        )
    if isinstance(e, _classes(hf, "RepositoryNotFoundError")):
        return PullError(f"repo {repo} not found on {endpoint} (if it is private, set HF_TOKEN)")
    if isinstance(e, _classes(hf, "RevisionNotFoundError")):
        return PullError(f"revision not found in repo {repo}")
    if isinstance(e, _classes(hf, "RemoteEntryNotFoundError")) or (
        isinstance(e, _classes(hf, "EntryNotFoundError")) and isinstance(e, http_error)
    ):
        return PullError(f"file {filename} not found in repo {repo}")
    if http_error and isinstance(e, http_error):
        return _http_status_error(e, repo=repo, where=where)
    if isinstance(e, _classes(hf, "LocalEntryNotFoundError")):
        # hf_hub_download's wrapper for "the hub could not be reached and nothing is cached".
        cause = e.__cause__
        reason = _reason(cause) if cause is not None else "no answer"
        return PullError(
            f"cannot reach the Hugging Face hub ({endpoint}): {reason} — {unreachable}"
        )
    network = _network_errors()
    if network and isinstance(e, network):
        reason = _reason(e) or type(e).__name__
        if stage == "reach":
            return PullError(
                f"cannot reach the Hugging Face hub ({endpoint}): {reason} — {unreachable}"
            )
        return PullError(f"download of {where} failed: {reason} — run the command again")
    if isinstance(e, OSError):
        return PullError(f"download of {where} failed: {_reason(e)}")
    if isinstance(e, ValueError):
        return PullError(f"cannot pull {where}: {_reason(e)}")
    return PullError(f"download of {where} failed: {type(e).__name__}: {_reason(e)}")


def _http_status_error(e: BaseException, *, repo: str, where: str) -> PullError:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return PullError(
            f"the hub refused access to {repo} (HTTP {status}) — set HF_TOKEN to a token "
            "that can read it"
        )
    if status == 429:
        return PullError(f"the hub is rate-limiting requests (HTTP 429) — try {where} again later")
    if status is not None and status >= 500:
        return PullError(f"the hub failed (HTTP {status}) while serving {where} — try again later")
    server_message = getattr(e, "server_message", None)
    detail = f": {_clean(server_message)}" if server_message else ""
    return PullError(f"the hub answered HTTP {status} for {where}{detail}")


def _reason(e: BaseException) -> str:
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
