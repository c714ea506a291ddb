"""A tiny stand-in for the Hugging Face hub, enough for `bot.model.pull` (huggingface_hub's
`get_hf_file_metadata` for the HEAD, `http_get` for the GET) and `hf_hub_download`.

It serves `/{repo}/resolve/{revision}/{filename}` (HEAD and GET) like the hub does for LFS
files, which is what GGUF files always are:

- `X-Repo-Commit`: the library refuses a response without it ("not a Hub endpoint").
- `X-Linked-Etag` / `ETag`: the sha256 of the file (for LFS files the hub's etag *is* the
  sha256); `bot.model.pull` verifies the download against it.
- `X-Linked-Size` / `Content-Length`: the expected size (checked when the transfer ends).
- `Accept-Ranges` and `Range: bytes=N-` answered with 206 + `Content-Range`, so an interrupted
  transfer resumes instead of starting over.
- No `X-Xet-Hash` / `Link: xet-auth`: without them the library never tries the Xet protocol.
- Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), which is
  how the library picks `RepositoryNotFoundError`, `RevisionNotFoundError` and
  `RemoteEntryNotFoundError`.

The tree API of a repo's top folder, `GET /api/models/{repo}/tree/{revision}`, which
`HfApi.list_repo_files` asks with `recursive=true`, answers a JSON list of entries as the hub
does: `{"type": "file", "oid": <git blob id>, "size", "path", "lfs": {"oid": <sha256>, "size",
"pointerSize"}}` for a file (an LFS file, as here every one is) and `{"type": "directory", "oid",
"size": 0, "path"}` for a folder; without `recursive`, the top folder's entries only. (The hub
pages more than 1,000 entries with a `Link` header; the fake's repos fit one page.)
`tree_status` answers it with that status instead (404: a mirror without the API).

With `cdn=True` the resolve URL answers `302` to a second server (another port, so another
origin) like the real hub redirects LFS files to its CDN; the library then reads the metadata
from the 302 itself and must not forward the `Authorization` header to the CDN.

Faults for tests: `drop_gets` GETs send only `drop_after` bytes of the body and then close
the socket (a dropped connection); with `cut_at` set, every GET stops at that offset of the
file and closes the socket (the network is down from there on: retries get nowhere);
`ignore_range` answers a Range request with 200 and the whole file, like a proxy or CDN that
does not do ranges; `corrupt` serves bytes that differ from the advertised sha256.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the fake saw it; `authorized` says whether a token was sent, not which."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool


class FakeHub:
    """`with FakeHub({("org/repo", "f.gguf"): data}) as hub:`, then HF_ENDPOINT=hub.url."""

    def __init__(
        self,
        files: Mapping[tuple[str, str], bytes],
        *,
        cdn: bool = False,
        commit: str = COMMIT,
    ) -> None:
        self.files: dict[tuple[str, str], bytes] = dict(files)
        self.commit = commit
        self.cdn = cdn
        # Fault injection, read by the handler on every request (tests may change them live).
        self.drop_gets = 0
        self.drop_after = 0
        self.cut_at: int | None = None
        self.ignore_range = False
        self.corrupt = False
        self.tree_status: int | None = None
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._hub = self._server("hub")
        self._cdn = self._server("cdn") if cdn else None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        if self._cdn is None:
            raise RuntimeError("FakeHub was started without cdn=True")
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def __enter__(self) -> FakeHub:
        for server in (self._hub, self._cdn):
            if server is not None:
                # A short poll interval keeps shutdown() (and so every test) quick.
                thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in (self._hub, self._cdn):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- helpers for tests -------------------------------------------------------------------

    @staticmethod
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def gets(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET"]

    # -- internals ---------------------------------------------------------------------------

    def _server(self, name: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            fake = hub
            role = name

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_drop(self) -> bool:
        """True if this GET should be cut short (consumes one of `drop_gets`)."""
        with self._lock:
            if self.drop_gets > 0:
                self.drop_gets -= 1
                return True
            return False

    def _served_bytes(self, data: bytes) -> bytes:
        if not self.corrupt:
            return data
        # Same length, different content: only a checksum can tell.
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    def _name_of(self, data: bytes) -> str:
        return next(name for (_, name), d in self.files.items() if d == data).rsplit("/")[-1]

    def _blob(self, sha: str) -> bytes | None:
        for data in self.files.values():
            if hashlib.sha256(data).hexdigest() == sha:
                return data
        return None


def _file_entry(name: str, data: bytes) -> dict[str, object]:
    """A file as the tree API lists an LFS file: the git blob id of its pointer, the sha256."""
    sha = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
    blob = hashlib.sha1(f"blob {len(pointer)}\0{pointer}".encode()).hexdigest()
    lfs = {"oid": sha, "size": len(data), "pointerSize": len(pointer)}
    return {"type": "file", "oid": blob, "size": len(data), "path": name, "lfs": lfs}


def _folder_entry(path: str) -> dict[str, object]:
    oid = hashlib.sha1(path.encode()).hexdigest()  # a tree id; nothing reads it
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    role: str
    # HTTP/1.1 like the hub, but every response says `Connection: close`: no idle keep-alive
    # sockets linger between tests, and a dropped transfer is just an early close.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def _handle(self, *, send_body: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), url.query
        self.fake._record(
            Request(
                server=self.role,
                method=self.command,
                path=path,
                range=self.headers.get("Range"),
                authorized=self.headers.get("Authorization") is not None,
            )
        )
        if self.role == "cdn":
            match = _BLOB.match(path)
            data = self.fake._blob(match["sha"]) if match else None
            if data is None:
                self._error(404, None, "blob not found")
                return
            self._send_file(data, send_body=send_body)
            return

        tree = _TREE.match(path)
        if tree is not None and self.command == "GET":
            self._tree(tree["repo"], tree["rev"], parse_qs(query))
            return
        match = _RESOLVE.match(path)
        if match is None:
            self._error(404, None, "not found")
            return
        repo, rev, filename = match["repo"], match["rev"], match["file"]
        if not self._found(repo, rev):
            return
        data = self.fake.files.get((repo, filename))
        if data is None:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        sha = hashlib.sha256(data).hexdigest()
        if self.fake.cdn:
            # The real hub answers LFS files with a redirect that carries the metadata.
            self.send_response(302)
            self.send_header("Location", f"{self.fake.cdn_url}/blobs/{sha}")
            self._hub_headers(data)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        self._send_file(data, send_body=send_body)

    def _found(self, repo: str, rev: str) -> bool:
        """True for a known repo and revision; else the hub's 404 is sent."""
        if not any(r == repo for r, _ in self.fake.files):
            self._error(404, "RepoNotFound", "Repository not found")
            return False
        if rev not in ("main", self.fake.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return False
        return True

    def _tree(self, repo: str, rev: str, query: dict[str, list[str]]) -> None:
        if self.fake.tree_status is not None:
            self._error(self.fake.tree_status, None, "not found")
            return
        if not self._found(repo, rev):
            return
        recursive = query.get("recursive", ["false"])[-1].lower() in ("true", "1")
        entries: dict[str, dict[str, object]] = {}
        for (r, name), data in self.fake.files.items():
            if r != repo:
                continue
            parts = name.split("/")
            if not recursive and len(parts) > 1:  # only the top folder's own entries
                entries[parts[0]] = _folder_entry(parts[0])
                continue
            for depth in range(1, len(parts)):  # every folder on the way down, then the file
                where = "/".join(parts[:depth])
                entries[where] = _folder_entry(where)
            entries[name] = _file_entry(name, data)
        payload = json.dumps(list(entries.values())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _hub_headers(self, data: bytes) -> None:
        sha = hashlib.sha256(data).hexdigest()
        self.send_header("X-Repo-Commit", self.fake.commit)
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("ETag", f'"{sha}"')

    def _send_file(self, data: bytes, *, send_body: bool) -> None:
        served = self.fake._served_bytes(data)
        size = len(served)
        start, end = 0, size - 1
        wanted = None if self.fake.ignore_range else self.headers.get("Range")
        partial = False
        if wanted:
            match = _RANGE.match(wanted.strip())
            if match is None or int(match["start"]) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            start = int(match["start"])
            end = min(int(match["end"]), size - 1) if match["end"] else size - 1
            partial = True
        body = served[start : end + 1]

        self.send_response(206 if partial else 200)
        if self.role == "hub":
            self._hub_headers(data)
        else:
            # Like the hub's CDN; the library takes the progress bar's label from it.
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            name = self.fake._name_of(data)
            self.send_header("Content-Disposition", f'attachment; filename="{name}";')
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Connection", "close")
        self.end_headers()
        if not send_body:
            return
        cut_at = self.fake.cut_at
        if self.command == "GET" and cut_at is not None and cut_at <= end:
            # The network goes down at byte `cut_at` of the file: send up to it, hang up.
            self.wfile.write(body[: max(0, cut_at - start)])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.command == "GET" and self.fake._take_drop():
            # Promise the whole body, send part of it, then hang up: a dropped connection.
            self.wfile.write(body[: self.fake.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        payload = message.encode()
        self.send_response(status)
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if code == "EntryNotFound":
            self.send_header("X-Repo-Commit", self.fake.commit)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
