"""The Matrix sync loop: log in, sync, and hand each sync's events to the daemon.

nio runs callbacks inside its sync: here they only record events. After each sync the batch
goes to the dispatcher (adapters/matrix/dispatch.py), which hands each room's events in order
to the translator (adapters/matrix/translate.py) and the daemon, rooms side by side; the sync
token is saved once the daemon has taken the whole batch, so after a restart nothing is seen
(or answered) twice, and messages that arrived while the bot was down are answered only within
`catch_up_window_s`. While the dispatcher is full the loop waits before syncing again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    ForwardedRoomKeyEvent,
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    RedactionEvent,
    RoomKeyEvent,
    RoomMessageText,
    SyncResponse,
    ToDeviceEvent,
)

from adapters.common.failure import describe
from adapters.matrix.account import Account
from adapters.matrix.crypto import Crypto
from adapters.matrix.dispatch import Batch, Dispatcher
from adapters.matrix.login import (
    RETRY_MAX_S,
    FatalLogin,
    SavedLoginRejected,
    log_in,
    raise_for,
)
from adapters.matrix.outbox import Outbox
from adapters.matrix.rules import matches, room_allowed, sent_by_a_bot
from adapters.matrix.state import Session, SyncState
from adapters.matrix.translate import CHAT_MESSAGES, Translator
from bot.backoff import Backoff
from bot.events import Sink

log = structlog.get_logger(__name__)

SYNC_TIMEOUT_MS = 30_000
# nio waits out this many 429s per request (sleeping as long as the server asks), then
# returns the error: a bounded wait, after which a final text is retried by Outbox.send.
MAX_LIMIT_EXCEEDED = 4
# Only what the adapter reads: no presence, no others' typing or receipts (fewer wake-ups).
SYNC_FILTER: dict[str, Any] = {
    "presence": {"types": []},
    "account_data": {"types": []},
    "room": {
        "timeline": {"limit": 50},
        "state": {"lazy_load_members": False},
        "ephemeral": {"types": []},
        "account_data": {"types": []},
    },
}


class SyncLoop:
    """Keeps the bot logged in and syncing; passes each sync's events on to the daemon."""

    def __init__(
        self,
        account: Account,
        translator: Translator,
        crypto: Crypto,
        outbox: Outbox,
        ready: asyncio.Event,
        give_up: Callable[[str], None],
    ) -> None:
        self._account = account
        self._translator = translator
        self._crypto = crypto
        self._outbox = outbox
        self._ready = ready
        self._give_up = give_up
        self.sink: Sink | None = None
        self.connected = False
        self.stopping = False
        self.dispatcher = Dispatcher(self._pass_on, self._advance, account.save_state)
        self._batch = Batch()
        self._keys_arrived: list[Batch] = []  # events readable now, recorded during a sync
        self._joining: set[str] = set()

    # -- logging in and syncing -----------------------------------------------------------------

    async def run(self) -> None:
        account = self._account
        backoff = Backoff(0.5, RETRY_MAX_S)
        relogged = False
        while not self.stopping:
            try:
                client = await log_in(
                    account.settings, account.homeserver, account.store_dir, self._new_client
                )
            except FatalLogin as exc:
                self._give_up(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("matrix login failed; retrying", error=describe(exc), in_s=delay)
                await asyncio.sleep(delay)
                continue
            account.client = client
            account.user_id = client.user_id
            account.state = SyncState.load(account.store_dir, client.user_id)
            try:
                await self._sync_forever(client)
                return
            except SavedLoginRejected as exc:
                await client.close()
                account.client = None
                password = account.settings.password
                if relogged or password is None or not password.get_secret_value():
                    self._give_up(f"the homeserver refused the saved login: {exc}")
                    return
                # Logged out elsewhere, or the crypto store was lost: a new login, a new device.
                log.warning("saved Matrix login refused; logging in again", error=str(exc))
                Session.forget(account.store_dir)
                relogged = True

    def _new_client(self, user: str) -> AsyncClient:
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=False,  # saved by us, once the daemon has the batch
            max_limit_exceeded=MAX_LIMIT_EXCEEDED,
            max_timeouts=2,  # then our own loops back off and retry
            max_timeout_retry_wait_time=RETRY_MAX_S,
            request_timeout=60,
        )
        store = self._account.store_dir
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = AsyncClient(self._account.homeserver, user, store_path=str(store), config=config)
        client.add_event_callback(self._on_message, CHAT_MESSAGES)
        client.add_event_callback(self._on_megolm, MegolmEvent)
        client.add_event_callback(self._on_redaction, RedactionEvent)
        client.add_event_callback(self._on_invite, InviteMemberEvent)
        client.add_to_device_callback(self._on_to_device, ToDeviceEvent)
        client.add_response_callback(self._on_error_response, ErrorResponse)
        return client

    async def _sync_forever(self, client: AsyncClient) -> None:
        backoff = Backoff(0.5, RETRY_MAX_S)
        first = True
        while not self.stopping:
            try:
                if client.should_upload_keys:  # before the first sync: others can then encrypt
                    raise_for(await client.keys_upload(), keys=True)
                if first:
                    await self._load_display_name(client)
                since = self._account.state.next_batch if first else None
                self._batch = Batch(initial=first and since is None)
                response = await client.sync(
                    timeout=0 if first else SYNC_TIMEOUT_MS,
                    sync_filter=SYNC_FILTER,
                    since=since,
                    # After a restart nio knows no room state: ask for all of it once.
                    full_state=True if first else None,
                )
                raise_for(response)
            except (SavedLoginRejected, asyncio.CancelledError):
                raise
            except Exception as exc:
                self.connected = False
                delay = backoff.next()
                log.warning("matrix sync failed; retrying", error=describe(exc), in_s=delay)
                await asyncio.sleep(delay)
                continue
            assert isinstance(response, SyncResponse)
            if not self.connected:
                log.info("matrix connected", user=client.user_id, device=client.device_id)
            self.connected = True
            backoff.reset()
            first = False
            self._batch.next_batch = response.next_batch
            batches, self._keys_arrived = [*self._keys_arrived, self._batch], []
            self._batch = Batch()
            for batch in batches:  # waits while the dispatcher is full: no sync meanwhile
                await self.dispatcher.inbox.put(batch)
            self._ready.set()
            await self._crypto.after_sync(client)

    async def _load_display_name(self, client: AsyncClient) -> None:
        with contextlib.suppress(Exception):
            profile = await client.get_displayname(client.user_id)
            self._account.display_name = getattr(profile, "displayname", None)

    # -- callbacks (inside nio's sync: record only, never wait) -------------------------------

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        self._translator.saw(event)
        if sent_by_a_bot(event.source.get("content") or {}):
            return  # our own messages, or another hearthbot's: never a loop
        if event.sender != self._account.user_id:
            self._batch.items.append((room, event))

    async def _on_megolm(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if event.sender == self._account.user_id:
            return
        self._crypto.hold(room, event)
        self._batch.items.append((room, event))

    async def _on_redaction(self, room: MatrixRoom, event: RedactionEvent) -> None:
        self._batch.items.append((room, event))

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self._account.user_id or event.membership != "invite":
            return
        if room.room_id in self._joining:
            return
        s = self._account.settings
        if not matches(event.sender, s.allowed_users):
            log.info("invite ignored: sender not allowed", room=room.room_id, sender=event.sender)
            return
        if not room_allowed(room.room_id, s.allowed_rooms):
            log.info("invite ignored: room not allowed", room=room.room_id, sender=event.sender)
            return
        if event.content.get("is_direct"):
            self._account.state.mark_direct(room.room_id)
        self._joining.add(room.room_id)
        self._outbox.spawn(self._join(room.room_id), name="matrix-join")

    async def _join(self, room_id: str) -> None:
        try:
            client = self._account.client
            if client is not None:
                response = await client.join(room_id)
                if isinstance(response, ErrorResponse):
                    log.warning("could not join", room=room_id, error=describe(response))
                else:
                    log.info("joined", room=room_id)
        finally:
            self._joining.discard(room_id)

    async def _on_to_device(self, event: ToDeviceEvent) -> None:
        if isinstance(event, RoomKeyEvent | ForwardedRoomKeyEvent):
            readable = self._crypto.key_arrived(event.session_id)
            for _, decrypted in readable:
                self._translator.saw(decrypted)
            if readable:
                self._keys_arrived.append(Batch(items=list(readable)))
        else:
            self._crypto.verifier.handle(event)

    async def _on_error_response(self, response: ErrorResponse) -> None:
        self._outbox.rate_limited(response)

    # -- handing events to the daemon (adapters/matrix/dispatch.py) ---------------------------

    async def dispatch(self) -> None:
        await self.dispatcher.run()

    def _advance(self, token: str) -> None:
        self._account.state.advance(token)  # the state of the account logged in now

    async def _pass_on(self, room: MatrixRoom, event: Event, initial: bool) -> None:
        if isinstance(event, MegolmEvent):
            if not initial and self._account.allowed(room, event.sender):
                notice = await self._crypto.undecryptable(room, event)
                if notice is not None:
                    self._outbox.spawn(self._send_notice(room.room_id, notice), "matrix-notice")
            return
        translated = await self._translator.translate(room, event, initial)
        if translated is not None and self.sink is not None:
            await self.sink(translated)

    async def _send_notice(self, room_id: str, content: dict[str, Any]) -> None:
        await self._outbox.send(room_id, content, must=True)
