"""A real Synapse for the Matrix tests: started from its own venv (`.venv-synapse`, installed by
`make test`; the project never imports it) on a free 127.0.0.1 port, with a fresh SQLite
database, a registration shared secret, cheap password hashing and no federation.

Most tests want every rate limit raised (Synapse's defaults lock out the 6th login for five
minutes); `rate_limits="default"` keeps Synapse's own message limits for the test that shows
streaming survives them. Users are registered through the shared-secret admin API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    EnableEncryptionBuilder,
    Event,
    JoinResponse,
    LocalProtocolError,
    MatrixRoom,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessage,
    RoomSendResponse,
    ToDeviceEvent,
    TypingNoticeEvent,
)

ROOT = Path(__file__).resolve().parents[2]
SYNAPSE_VENV = ROOT / ".venv-synapse"
SERVER_NAME = "hearthbot.test"
START_TIMEOUT_S = 60

# Every rc_* rate limit Synapse 1.16x knows, raised far beyond what a test does.
_HIGH = {"per_second": 10_000, "burst_count": 100_000}
RAISED_LIMITS: dict[str, object] = {
    "rc_message": _HIGH,
    "rc_registration": _HIGH,
    "rc_registration_token_validity": _HIGH,
    "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
    "rc_admin_redaction": _HIGH,
    "rc_joins": {"local": _HIGH, "remote": _HIGH},
    "rc_joins_per_room": _HIGH,
    "rc_key_requests": _HIGH,
    "rc_3pid_validation": _HIGH,
    "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
    "rc_third_party_invite": _HIGH,
    "rc_media_create": _HIGH,
    "rc_presence": {"per_user": _HIGH},
    "rc_delayed_event_mgmt": _HIGH,
    "rc_room_creation": _HIGH,
    "rc_reports": _HIGH,
    "rc_user_directory": _HIGH,
    "rc_profile": _HIGH,
}

_names = itertools.count(1)
T = TypeVar("T")


class SynapseMissing(Exception):
    """No Synapse venv: `make test` installs one."""


def synapse_python() -> Path:
    python = Path(os.environ.get("HEARTHBOT_SYNAPSE_PYTHON", SYNAPSE_VENV / "bin" / "python"))
    if not python.exists():
        raise SynapseMissing(
            f"no Synapse at {python}: run `make test` (it installs matrix-synapse into "
            f"{SYNAPSE_VENV.name}), or set HEARTHBOT_SYNAPSE_PYTHON"
        )
    return python


def require_synapse() -> None:
    """In a test: skip without Synapse, but in CI (`CI=true`) fail, never skip."""
    import pytest  # only tests call this; the benchmarks import this module without pytest

    try:
        synapse_python()
    except SynapseMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Matrix tests: {exc}")
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    password: str
    access_token: str
    device_id: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


class Synapse:
    def __init__(self, base: Path, rate_limits: Literal["raised", "default"] = "raised") -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.shared_secret = secrets.token_hex(16)
        self.rate_limits = rate_limits
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = base / "synapse.log"
        self._config = base / "homeserver.yaml"

    # -- lifecycle ------------------------------------------------------------------------------

    def write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        key = self.base / "signing.key"
        if not key.exists():
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            key.write_text(f"ed25519 a_test {seed}\n")
        config: dict[str, object] = {
            "server_name": SERVER_NAME,
            "pid_file": str(self.base / "synapse.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(self.base / "homeserver.db")}},
            "media_store_path": str(self.base / "media"),
            "signing_key_path": str(key),
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "registration_shared_secret": self.shared_secret,
            "bcrypt_rounds": 4,
            "report_stats": False,
            "enable_metrics": False,
            # Nothing leaves this machine: no federation, no key servers, no previews.
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "enable_registration": False,
            "presence": {"enabled": False},
            "allow_public_rooms_without_auth": False,
            # Synapse answers a repeated identical /sync from a 2-minute cache: a client that
            # restarts with the same token would see what it saw before, hiding bugs.
            "caches": {"sync_response_cache_duration": 0},
        }
        if self.rate_limits == "raised":
            config.update(RAISED_LIMITS)
        # JSON is YAML: no YAML library needed on this side.
        self._config.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        if not self._config.exists():
            self.write_config()
        log = self._log_file.open("ab")
        self._process = subprocess.Popen(
            [str(synapse_python()), "-m", "synapse.app.homeserver", "-c", str(self._config)],
            cwd=self.base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Synapse exited ({self._process.returncode}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not start in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- admin API ------------------------------------------------------------------------------

    async def register(self, prefix: str = "user", admin: bool = False) -> Account:
        """A fresh user (unique name) through the shared-secret registration API."""
        username = f"{prefix}{next(_names)}_{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as http:
            async with http.get(endpoint) as resp:
                nonce = (await resp.json())["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            for part in (nonce, username, password):
                mac.update(part.encode())
                mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            body = {
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with http.post(endpoint, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"register failed: {resp.status} {data}")
        return Account(data["user_id"], password, data["access_token"], data["device_id"])

    async def set_displayname(self, account: Account, name: str) -> None:
        url = f"{self.url}/_matrix/client/v3/profile/{account.user_id}/displayname"
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {account.access_token}"}
            async with http.put(url, json={"displayname": name}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()


# -- the other side of a conversation: a real matrix-nio client ---------------------------------


@dataclass(slots=True)
class Seen:
    room_id: str
    event: Any
    at: float  # time.monotonic() when this client's sync delivered it


def matrix_section(server: Synapse, account: Account, **matrix: Any) -> dict[str, Any]:
    """A `[matrix]` config section: `account` on `server`, everyone there allowed unless
    `allowed_users` says otherwise."""
    return {
        "homeserver": server.url,
        "user_id": account.user_id,
        "password": account.password,
        "allowed_users": [f"@*:{SERVER_NAME}"],
        **matrix,
    }


class Peer:
    """A person's client (real matrix-nio, encryption on) that records what it sees."""

    def __init__(self, server: Synapse, account: Account, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.account = account
        self.user_id = account.user_id
        config = AsyncClientConfig(
            encryption_enabled=True, max_timeout_retry_wait_time=0.5, request_timeout=30
        )
        self.client = AsyncClient(
            server.url, account.user_id, account.device_id, str(store), config=config
        )
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.seen: list[Seen] = []
        self.typing: list[Seen] = []
        self.to_device: list[Any] = []
        self._changed = asyncio.Event()
        self._sync: asyncio.Task[None] | None = None
        self.client.add_event_callback(self._on_event, Event)
        self.client.add_ephemeral_callback(self._on_typing, TypingNoticeEvent)
        self.client.add_to_device_callback(self._on_to_device, ToDeviceEvent)

    async def start(self) -> Peer:
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        self._sync = asyncio.create_task(self.client.sync_forever(timeout=30_000))
        await asyncio.wait_for(self.client.synced.wait(), 20)
        return self

    async def stop(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync
        await self.client.close()

    async def _on_event(self, room: MatrixRoom, event: Event) -> None:
        self.seen.append(Seen(room.room_id, event, time.monotonic()))
        self._changed.set()

    async def _on_typing(self, room: MatrixRoom, event: TypingNoticeEvent) -> None:
        self.typing.append(Seen(room.room_id, event, time.monotonic()))
        self._changed.set()

    async def _on_to_device(self, event: ToDeviceEvent) -> None:
        self.to_device.append(event)
        self._changed.set()

    async def wait_for(self, check: Callable[[], T | None], timeout: float = 20) -> T:
        """Until `check()` returns something truthy (re-checked after every sync)."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.user_id}: condition not met in {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    # -- actions --------------------------------------------------------------------------------

    async def create_room(
        self, invite: Sequence[str] = (), direct: bool = False, encrypted: bool = False
    ) -> str:
        state = [EnableEncryptionBuilder().as_dict()] if encrypted else []
        response = await self.client.room_create(
            invite=list(invite), is_direct=direct, initial_state=state
        )
        assert isinstance(response, RoomCreateResponse), response
        await self.wait_for(lambda: response.room_id in self.client.rooms)
        return str(response.room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        response = await self.client.room_invite(room_id, user_id)
        assert isinstance(response, RoomInviteResponse), response

    async def join(self, room_id: str) -> None:
        response = await self.client.join(room_id)
        assert isinstance(response, JoinResponse), response
        await self.wait_for(lambda: self.joined(room_id, self.user_id))

    def joined(self, room_id: str, user_id: str) -> bool:
        room = self.client.rooms.get(room_id)
        user = room.users.get(user_id) if room else None
        return user is not None and not user.invited

    async def send(self, room_id: str, body: str, **content: Any) -> str:
        """A text message; extra content keys (m.mentions, m.relates_to) as given."""
        return await self.send_content(room_id, {"msgtype": "m.text", "body": body, **content})

    async def send_content(self, room_id: str, content: dict[str, Any]) -> str:
        if self.client.should_query_keys:
            with contextlib.suppress(LocalProtocolError):
                await self.client.keys_query()
        response = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)

    async def caught_up(self, room_id: str, timeout: float = 20) -> None:
        """Until this client's sync has delivered every event the server held when this was
        called: its own typing notice, set now, arrives in a sync made after it, and a sync
        holds everything up to the moment it was made (an edit already sent may otherwise
        still be on its way while an earlier one shows)."""
        since = time.monotonic()
        await self.client.room_typing(room_id, True, timeout=5_000)
        await self.wait_for(
            lambda: any(s.at >= since for s in self.typing_by(self.user_id, room_id)), timeout
        )
        await self.client.room_typing(room_id, False)

    # -- what the bot showed --------------------------------------------------------------------

    def messages_from(self, user_id: str, room_id: str) -> list[Seen]:
        """Messages (not edits) from `user_id` in the room, in order."""
        return [
            s
            for s in self.seen
            if s.room_id == room_id
            and s.event.sender == user_id
            and isinstance(s.event, RoomMessage)
            and (s.event.source["content"].get("m.relates_to") or {}).get("rel_type") != "m.replace"
        ]

    def edits_of(self, event_id: str) -> list[Seen]:
        return [
            s
            for s in self.seen
            if isinstance(s.event, RoomMessage)
            and (s.event.source["content"].get("m.relates_to") or {}).get("event_id") == event_id
            and s.event.source["content"]["m.relates_to"].get("rel_type") == "m.replace"
        ]

    def reply_to(self, user_id: str, event_id: str) -> Seen | None:
        """The first message from `user_id` that replies to `event_id`."""
        for seen in self.messages_from(user_id, self._room_of(event_id)):
            relation = seen.event.source["content"].get("m.relates_to") or {}
            if (relation.get("m.in_reply_to") or {}).get("event_id") == event_id:
                return seen
        return None

    def _room_of(self, event_id: str) -> str:
        for s in self.seen:
            if s.event.event_id == event_id:
                return s.room_id
        return ""

    def latest_text(self, event_id: str) -> str:
        """The text of `event_id` as the newest edit left it."""
        edits = self.edits_of(event_id)
        if edits:
            return str(edits[-1].event.source["content"]["m.new_content"]["body"])
        for s in self.seen:
            if s.event.event_id == event_id:
                return str(s.event.body)
        raise KeyError(event_id)

    def typing_by(self, user_id: str, room_id: str) -> list[Seen]:
        return [s for s in self.typing if s.room_id == room_id and user_id in s.event.users]


def main() -> None:
    """`python tests/support/synapse.py DIR`: run one by hand (Ctrl-C stops it)."""
    server = Synapse(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("synapse-test"))
    server.start()
    print(server.url, "shared secret:", server.shared_secret, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(asyncio.Event().wait())
    server.stop()


if __name__ == "__main__":
    main()
