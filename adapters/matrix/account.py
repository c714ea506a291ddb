"""The bot's Matrix account as the adapter's parts (sync, translate, crypto, outbox) share it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from nio import AsyncClient, MatrixRoom

from adapters.common.failure import describe
from adapters.common.state_file import write_private
from adapters.matrix.rules import is_direct, matches, room_allowed
from adapters.matrix.state import STATE_FILE, SyncState
from bot.settings import BotSettings, MatrixSettings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Account:
    """What the Matrix adapter's parts share: the settings (replaced on SIGHUP), the logged-in
    client (replaced by a new login), who the bot is there, and the sync state."""

    settings: MatrixSettings
    homeserver: str
    store_dir: Path  # nio's crypto store, the saved login and the sync state
    client: AsyncClient | None = None
    user_id: str = ""
    display_name: str | None = None
    state: SyncState = field(default_factory=SyncState)

    @classmethod
    def from_settings(cls, settings: MatrixSettings, bot: BotSettings) -> Account:
        if not settings.homeserver:
            raise ValueError("[matrix] homeserver is not set")
        return cls(
            settings=settings,
            homeserver=settings.homeserver.rstrip("/"),
            store_dir=(settings.store_dir or bot.data_dir / "matrix").expanduser(),
            user_id=settings.user_id or "",
        )

    def allowed(self, room: MatrixRoom, sender: str) -> bool:
        """Whether the bot listens to this sender in this room."""
        s = self.settings
        return matches(sender, s.allowed_users) and room_allowed(room.room_id, s.allowed_rooms)

    def direct(self, room: MatrixRoom) -> bool:
        members = room.member_count
        return is_direct(self.state.marked_members(room.room_id, members), members)

    async def save_state(self) -> None:
        """Write the sync state if it changed (a failed write is tried again next time)."""
        if not self.state.dirty or not self.user_id:
            return
        self.state.dirty = False
        snapshot = self.state.snapshot(self.user_id)
        try:
            await asyncio.to_thread(write_private, self.store_dir / STATE_FILE, snapshot)
        except OSError as exc:
            self.state.dirty = True
            log.warning("could not save Matrix sync state", error=describe(exc))
