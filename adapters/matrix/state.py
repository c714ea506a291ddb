"""What the Matrix adapter keeps on disk beside nio's crypto store (all under `store_dir`):

- `session.json` (mode 0600): the access token and device id of the one password login, so
  every later start restores the same device and its keys instead of creating a new one.
- `state.json`: the sync token (after a restart, sync resumes there: old events are never
  seen again), rooms the inviter marked direct (with their member count when the bot first
  looked: a room that grows past it is a group room), and which thread recent messages were
  in (a redaction or an edit names only the event, but the thread is part of the channel).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.common.state_file import read_json, write_private

SESSION_FILE = "session.json"
STATE_FILE = "state.json"
# Thread membership of this many recent messages is remembered (a few hundred KB at most).
MAX_THREAD_EVENTS = 5000


@dataclass(frozen=True, slots=True)
class Session:
    """The bot's one password login, saved so every start restores the same device."""

    homeserver: str
    user_id: str
    device_id: str
    access_token: str

    @classmethod
    def load(cls, store_dir: Path) -> Session | None:
        data = read_json(store_dir / SESSION_FILE)
        if data is None:
            return None
        try:
            return cls(
                str(data["homeserver"]),
                str(data["user_id"]),
                str(data["device_id"]),
                str(data["access_token"]),
            )
        except KeyError:
            return None

    def save(self, store_dir: Path) -> None:
        write_private(
            store_dir / SESSION_FILE,
            {
                "homeserver": self.homeserver,
                "user_id": self.user_id,
                "device_id": self.device_id,
                "access_token": self.access_token,
            },
        )

    @staticmethod
    def forget(store_dir: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (store_dir / SESSION_FILE).unlink()


@dataclass(slots=True)
class SyncState:
    """Where syncing resumes, which rooms are DMs, and recent messages' threads."""

    next_batch: str | None = None
    # Room marked direct → its member count when the bot first looked (0: not looked yet).
    direct_rooms: dict[str, int] = field(default_factory=dict)
    threads: OrderedDict[str, str] = field(default_factory=OrderedDict)  # event id → root
    dirty: bool = False

    @classmethod
    def load(cls, store_dir: Path, user_id: str) -> SyncState:
        data = read_json(store_dir / STATE_FILE)
        # A sync token belongs to one account: another account starts afresh.
        if data is None or data.get("user_id") != user_id:
            return cls()
        threads = data.get("threads")
        direct = data.get("direct_rooms") or {}
        if isinstance(direct, list):  # saved before member counts were: taken as two
            direct = dict.fromkeys(direct, 2)
        return cls(
            next_batch=data.get("next_batch") or None,
            direct_rooms={
                str(room): count
                for room, count in (direct.items() if isinstance(direct, dict) else ())
                if isinstance(count, int)
            },
            threads=OrderedDict(threads if isinstance(threads, dict) else {}),
        )

    def snapshot(self, user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "next_batch": self.next_batch,
            "direct_rooms": dict(sorted(self.direct_rooms.items())),
            "threads": dict(self.threads),
        }

    def remember_thread(self, event_id: str, root: str) -> None:
        self.threads[event_id] = root
        while len(self.threads) > MAX_THREAD_EVENTS:
            self.threads.popitem(last=False)
        self.dirty = True

    def mark_direct(self, room_id: str) -> None:
        if room_id not in self.direct_rooms:
            self.direct_rooms[room_id] = 0
            self.dirty = True

    def marked_members(self, room_id: str, member_count: int) -> int | None:
        """How many members a room marked direct had when the bot first looked (this look,
        if it is the first); None when it is not marked."""
        known = self.direct_rooms.get(room_id)
        if known == 0:
            known = self.direct_rooms[room_id] = max(member_count, 2)
            self.dirty = True
        return known

    def advance(self, next_batch: str) -> None:
        if next_batch != self.next_batch:
            self.next_batch = next_batch
            self.dirty = True
