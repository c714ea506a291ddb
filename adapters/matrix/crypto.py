"""End-to-end encryption upkeep for the Matrix adapter (README: "Encryption and trust").

Keys are uploaded before the first sync (adapters/matrix/sync.py); after each sync the
devices nio learned of are queried and claimed, allowed users' devices are trusted on first
use, and admins' emoji verification is answered (adapters/matrix/verify.py). A message that
cannot be decrypted is kept, its key requested, and it is decrypted and passed on once the
key arrives; in a DM its sender is told once per session (bot.texts.UNDECRYPTABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from nio import (
    AsyncClient,
    ErrorResponse,
    LocalProtocolError,
    MatrixRoom,
    MegolmEvent,
    RoomEncryptedImage,
    RoomMessageImage,
    RoomMessageText,
)

from adapters.common.failure import describe
from adapters.matrix.account import Account
from adapters.matrix.format import message_content
from adapters.matrix.rules import matches, thread_root, within_window
from adapters.matrix.verify import Verifier
from bot.settings import MatrixSettings
from bot.texts import UNDECRYPTABLE

log = structlog.get_logger(__name__)

# Undecryptable events kept for their key, whatever arrives: per session, and sessions.
HELD_PER_SESSION = 20
HELD_SESSIONS = 200


class Crypto:
    """Keys, device trust and verification for the bot's device; messages awaiting a key."""

    def __init__(self, account: Account) -> None:
        self._account = account
        self.verifier = Verifier(account.settings.admins)
        self._undecrypted: dict[str, list[tuple[MatrixRoom, MegolmEvent]]] = {}  # by session
        self._noticed_sessions: set[tuple[str, str]] = set()  # (room, session): told once

    def update_settings(self, settings: MatrixSettings) -> None:
        self.verifier.admins = settings.admins

    # -- keys and trust -------------------------------------------------------------------------

    async def after_sync(self, client: AsyncClient) -> None:
        """What nio's sync_forever does between syncs, then trust and verification steps."""
        try:
            if client.outgoing_to_device_messages:
                await client.send_to_device_messages()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            self._trust_allowed_devices(client)
            await self.verifier.run(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("matrix key housekeeping failed", error=describe(exc))

    async def before_send(self, client: AsyncClient, room_id: str) -> None:
        """A member's new device must be known (and trusted, if allowed) before the room key
        is shared with the room."""
        if client.should_query_keys and room_id in client.encrypted_rooms:
            with contextlib.suppress(LocalProtocolError):
                await client.keys_query()
            self._trust_allowed_devices(client)

    def _trust_allowed_devices(self, client: AsyncClient) -> None:
        """Trust on first use for allowed users' devices (README: "Encryption and trust")."""
        if client.olm is None:
            return
        allowed = self._account.settings.allowed_users
        for user_id, devices in client.device_store.items():
            if user_id == client.user_id or not matches(user_id, allowed):
                continue
            for device in devices.values():
                if not device.verified and not device.blacklisted and not device.deleted:
                    client.verify_device(device)

    # -- messages that could not be decrypted ---------------------------------------------------

    def hold(self, room: MatrixRoom, event: MegolmEvent) -> None:
        """Keep an undecryptable event until its room key arrives (bounded)."""
        waiting = self._undecrypted.setdefault(event.session_id, [])
        if len(waiting) < HELD_PER_SESSION and len(self._undecrypted) < HELD_SESSIONS:
            waiting.append((room, event))

    def key_arrived(self, session_id: str) -> list[tuple[MatrixRoom, RoomMessageText]]:
        """The messages held for this session that can be read now."""
        waiting = self._undecrypted.pop(session_id, [])
        client = self._account.client
        if not waiting or client is None:
            return []
        readable = []
        for room, event in waiting:
            try:
                decrypted = client.decrypt_event(event)
            except Exception as exc:
                log.info("still cannot decrypt", room=room.room_id, error=describe(exc))
                continue
            if isinstance(decrypted, (RoomMessageText, RoomMessageImage, RoomEncryptedImage)):
                readable.append((room, decrypted))
        if readable:
            log.info("decrypted messages once their key arrived", count=len(readable))
        return readable

    async def undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> dict[str, Any] | None:
        """Ask the sender's devices for the key; the notice to send its sender, if any."""
        window_s = self._account.settings.catch_up_window_s
        if not within_window(event.server_timestamp, time.time(), window_s):
            return None
        log.warning(
            "cannot decrypt a message; requesting its key",
            room=room.room_id,
            sender=event.sender,
            session=event.session_id,
        )
        client = self._account.client
        if client is not None and event.session_id not in client.outgoing_key_requests:
            try:
                response = await client.request_room_key(event)
                if isinstance(response, ErrorResponse):
                    log.warning("room key request failed", error=describe(response))
            except LocalProtocolError:
                pass  # already requested
        # One notice per sender's session, and only in a DM: in a group room we cannot tell
        # whether the message was meant for us. Never leave the room over it.
        key = (room.room_id, event.session_id)
        if key in self._noticed_sessions or not self._account.direct(room):
            return None
        self._noticed_sessions.add(key)
        return message_content(
            UNDECRYPTABLE,
            reply_to=event.event_id,
            thread_root=thread_root(event.source.get("content", {})),
            msgtype="m.notice",
        )
