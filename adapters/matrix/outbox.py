"""Everything the Matrix adapter sends: answers and notices (retried until they land, with
one transaction id so the server never shows one twice), edits that slow down while the
homeserver answers 429, and typing notices. Replies (adapters/matrix/reply.py) talk to this.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from nio import AsyncClient, ErrorResponse, RoomSendResponse

from adapters.common.failure import describe
from adapters.common.tasks import BackgroundTasks
from adapters.matrix.account import Account
from adapters.matrix.login import RETRY_MAX_S
from bot.backoff import Backoff

log = structlog.get_logger(__name__)

# Characters a message holds at most, so it reads in one go; a text that would not fit one
# event (64 KiB) even so is split further (adapters.matrix.format.event_parts).
MAX_MESSAGE_LENGTH = 4000
SEND_ATTEMPTS = 6
MAX_EDIT_INTERVAL_S = 60.0
CALM_S = 60.0
TYPING_TIMEOUT_MS = 30_000
TYPING_RENEW_S = 20.0


class Outbox:
    """What replies send through: the room messages, the pace of edits, typing notices."""

    max_length = MAX_MESSAGE_LENGTH

    def __init__(
        self,
        account: Account,
        tasks: BackgroundTasks,
        ready: asyncio.Event,
        before_send: Callable[[AsyncClient, str], Awaitable[None]],
        sent: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._account = account
        self._tasks = tasks
        self._ready = ready  # logged in and synced once: rooms are known
        self._before_send = before_send  # (client, room id): keys for the room's devices
        self._sent = sent  # (event id, content): remembered as the bot's
        self._edit_interval = account.settings.edit_interval_s
        self._limited_at = 0.0  # when the homeserver last said 429
        self.typing = TypingNotices(self, self._send_typing)

    @property
    def edit_interval(self) -> float:
        base = self._account.settings.edit_interval_s
        if self._edit_interval > base and time.monotonic() - self._limited_at > CALM_S:
            # A quiet minute since the last 429: halve the extra wait, down to the setting.
            self._edit_interval = max(base, self._edit_interval / 2)
            self._limited_at = time.monotonic()
        return self._edit_interval

    def rate_limited(self, response: ErrorResponse) -> None:
        """nio reports each 429 before it sleeps and retries: edits then slow down."""
        if response.status_code != "M_LIMIT_EXCEEDED":
            return
        wait_s = (response.retry_after_ms or 0) / 1000
        widened = min(MAX_EDIT_INTERVAL_S, max(self._edit_interval * 2, wait_s))
        self._limited_at = time.monotonic()
        if widened > self._edit_interval:
            log.info("rate limited by the homeserver; edits slow down", interval_s=widened)
            self._edit_interval = widened

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run in the background (None when the adapter is stopped)."""
        return self._tasks.spawn(coro, name)

    async def wait_ready(self) -> None:
        """Until the client is logged in and has synced once (rooms are known)."""
        await self._ready.wait()

    def typing_on(self, room_id: str, holder: object) -> None:
        self.typing.on(room_id, holder)

    def typing_off(self, room_id: str, holder: object) -> None:
        self.typing.off(room_id, holder)

    async def send(self, room_id: str, content: dict[str, Any], must: bool) -> str | None:
        """Send an m.room.message; its event id, or None. With `must`, retried (with the same
        transaction id, so the server never shows it twice) until it lands or we give up."""
        transaction = str(uuid.uuid4())
        backoff = Backoff(1.0, RETRY_MAX_S)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            client = self._account.client
            if client is None:
                return None
            if room_id not in client.rooms:
                log.warning("not in that Matrix room (any more); not sending", room=room_id)
                return None
            try:
                await self._before_send(client, room_id)
                response = await client.room_send(
                    room_id,
                    "m.room.message",
                    content,
                    tx_id=transaction,
                    # Devices of allowed users are trusted already; other members' devices
                    # get the key too: they are in the room (README: "Encryption and trust").
                    ignore_unverified_devices=True,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                problem = describe(exc)
            else:
                if isinstance(response, RoomSendResponse):
                    self._sent(response.event_id, content)
                    return str(response.event_id)
                problem = describe(response)
            if not must or attempt == SEND_ATTEMPTS:
                log.warning("could not send to Matrix", room=room_id, error=problem)
                return None
            await asyncio.sleep(backoff.next())
        return None

    async def _send_typing(self, room_id: str, typing: bool, timeout_ms: int) -> None:
        client = self._account.client
        if client is None:
            return
        try:
            await client.room_typing(room_id, typing, timeout=timeout_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("typing notice failed", error=describe(exc))


class TypingNotices:
    """One typing notice per room while any answer there is queued or being written, renewed
    before the server lets it expire, withdrawn when the last one is done."""

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[str, bool, int], Awaitable[None]],
    ) -> None:
        self._outbox = outbox
        self._send = send  # (room_id, typing, timeout_ms)
        self._holders: dict[str, set[object]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._keepers: dict[str, asyncio.Task[None]] = {}

    def on(self, room_id: str, holder: object) -> None:
        self._holders.setdefault(room_id, set()).add(holder)
        if room_id not in self._keepers:
            keeper = self._outbox.spawn(self._keep(room_id), name="matrix-typing")
            if keeper is not None:
                self._keepers[room_id] = keeper

    def off(self, room_id: str, holder: object) -> None:
        holders = self._holders.get(room_id)
        if holders is not None and holder in holders:
            holders.discard(holder)
            if not holders and (changed := self._changed.get(room_id)):
                changed.set()

    def cancel(self) -> None:
        for keeper in self._keepers.values():
            keeper.cancel()

    async def _keep(self, room_id: str) -> None:
        changed = self._changed.setdefault(room_id, asyncio.Event())
        try:
            await self._outbox.wait_ready()
            while self._holders.get(room_id):
                await self._send(room_id, True, TYPING_TIMEOUT_MS)
                deadline = time.monotonic() + TYPING_RENEW_S
                while self._holders.get(room_id) and (left := deadline - time.monotonic()) > 0:
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), left)
                if not self._holders.get(room_id):
                    await self._send(room_id, False, TYPING_TIMEOUT_MS)
        finally:
            self._keepers.pop(room_id, None)
            if not self._holders.get(room_id):
                self._holders.pop(room_id, None)
                self._changed.pop(room_id, None)
