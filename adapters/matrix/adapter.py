"""Matrix (matrix-nio with end-to-end encryption): DMs and mentions in, streamed answers out.

The bot logs in with its password once and restores that login on every later start, so its
device and keys survive restarts (adapters/matrix/login.py). Keys are uploaded before the
first sync; allowed users' devices are trusted on first use; admins may verify the bot's
device with emoji (adapters/matrix/verify.py).

nio runs callbacks inside its sync: here they only record events. After each sync the batch
goes to a dispatcher task that translates it into bot.events and hands it to the daemon; the
sync token is saved once the daemon has taken the whole batch, so after a restart nothing is
seen (or answered) twice, and messages that arrived while the bot was down are answered only
within `catch_up_window_s`. The decisions (access globs, DM detection, is it for us) are pure
functions in adapters/matrix/rules.py; content is built in adapters/matrix/format.py; each
answer streams through its own MatrixReply (adapters/matrix/reply.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    ForwardedRoomKeyEvent,
    InviteMemberEvent,
    LocalProtocolError,
    MatrixRoom,
    MegolmEvent,
    RedactionEvent,
    RoomGetEventResponse,
    RoomKeyEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    ToDeviceEvent,
)

from adapters.common.backoff import Backoff
from adapters.common.failure import ReportsFailure, describe
from adapters.common.state_file import write_private
from adapters.common.tasks import BackgroundTasks
from adapters.matrix.format import message_content
from adapters.matrix.login import (
    RETRY_MAX_S,
    FatalLogin,
    SavedLoginRejected,
    is_token_error,
    is_transient,
    log_in,
    quiet_library_logs,
)
from adapters.matrix.reply import MatrixReply, TypingNotices
from adapters.matrix.rules import (
    addressing,
    channel_id,
    edited_event,
    is_direct,
    matches,
    reply_target,
    room_allowed,
    sent_by_a_bot,
    should_answer,
    strip_reply_fallback,
    thread_root,
    within_window,
)
from adapters.matrix.state import STATE_FILE, Session, SyncState
from adapters.matrix.verify import Verifier
from bot.events import (
    Capabilities,
    ChatEvent,
    Incoming,
    MessageDeleted,
    MessageEdited,
    Sink,
)
from bot.settings import BotSettings, MatrixSettings
from bot.texts import UNDECRYPTABLE

log = structlog.get_logger(__name__)

PLATFORM = "matrix"
# One event may be 64 KiB; an edit carries the text twice (body and HTML) and encryption
# grows it by a third, so 4,000 characters stay inside even for non-Latin scripts.
MAX_MESSAGE_LENGTH = 4000
SYNC_TIMEOUT_MS = 30_000
MAX_EDIT_INTERVAL_S = 60.0
CALM_S = 60.0
# nio waits out this many 429s per request (sleeping as long as the server asks), then
# returns the error: a bounded wait, after which a final text is retried by `send`.
MAX_LIMIT_EXCEEDED = 4
SEND_ATTEMPTS = 6
STOP_GRACE_S = 5.0
REMEMBERED_EVENTS = 2000
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


@dataclass(slots=True)
class Batch:
    """The events of one sync, in order, and the token to save once they are handed over."""

    items: list[tuple[MatrixRoom, Event]] = field(default_factory=list)
    next_batch: str | None = None
    initial: bool = False  # the first sync without a saved token: history, never answered


class MatrixAdapter(ReportsFailure):
    name = PLATFORM
    capabilities = Capabilities(
        can_edit=True, max_message_length=MAX_MESSAGE_LENGTH, formatting="markdown"
    )
    max_length = MAX_MESSAGE_LENGTH

    def __init__(self, settings: MatrixSettings, bot: BotSettings) -> None:
        if not settings.homeserver:
            raise ValueError("[matrix] homeserver is not set")
        self.settings = settings
        self.homeserver = settings.homeserver.rstrip("/")
        self.store_dir: Path = (settings.store_dir or bot.data_dir / "matrix").expanduser()
        self.client: AsyncClient | None = None
        self.user_id = settings.user_id or ""
        self._sink: Sink | None = None
        self._ready = asyncio.Event()
        self._connected = False
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Batch] = asyncio.Queue()
        self._batch = Batch()
        self._state = SyncState()
        self._tasks = BackgroundTasks(PLATFORM)
        self._typing = TypingNotices(self, self._send_typing)
        self._verifier = Verifier(settings.admins)
        self._edit_interval = settings.edit_interval_s
        self._limited_at = 0.0  # when the homeserver last said 429
        # Recent events: who sent them and their text (is a reply to us? what did it quote?).
        self._senders: OrderedDict[str, str] = OrderedDict()
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._display_name: str | None = None
        self._joining: set[str] = set()
        # Undecryptable events, retried when their room key arrives; one notice per session.
        self._undecrypted: dict[str, list[tuple[MatrixRoom, MegolmEvent]]] = {}
        self._noticed_sessions: set[tuple[str, str]] = set()

    # -- Adapter protocol -----------------------------------------------------------------------

    def update_settings(self, settings: MatrixSettings, bot: BotSettings) -> None:
        """SIGHUP: new access lists (allowed users and rooms, admins) without a new login.
        (`[bot]` admins are the core's to check.)"""
        self.settings = settings
        self._verifier.admins = settings.admins

    async def start(self, sink: Sink) -> None:
        """Returns at once: logging in and syncing happen in the background, so a homeserver
        that is down at boot delays Matrix only, never the daemon."""
        self._sink = sink
        self._stopping = False
        self._tasks.open()
        _ = self.failure
        quiet_library_logs()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="matrix-dispatch")
        self._runner = asyncio.create_task(self._run(), name="matrix-sync")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True  # no new work from here on
        self._tasks.close()
        self._connected = False
        for task in (self._runner, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Answers being delivered get a moment to land; typing notices are simply dropped.
        self._typing.cancel()
        await self._tasks.stop(grace_s=STOP_GRACE_S, wait_s=1)
        await self._save_state()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        log.info("matrix stopped")

    def is_connected(self) -> bool:
        return self._connected

    def open_reply(self, message: Incoming) -> MatrixReply:
        return MatrixReply(self, message)

    async def refuse(self, message: Incoming, notice: str) -> None:
        """A short m.notice in reply (the daemon sends at most one a minute per user)."""
        await MatrixReply(self, message).fail(notice)

    # -- the Outbox replies use -----------------------------------------------------------------

    @property
    def edit_interval(self) -> float:
        base = self.settings.edit_interval_s
        if self._edit_interval > base and time.monotonic() - self._limited_at > CALM_S:
            # A quiet minute since the last 429: halve the extra wait, down to the setting.
            self._edit_interval = max(base, self._edit_interval / 2)
            self._limited_at = time.monotonic()
        return self._edit_interval

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        return self._tasks.spawn(coro, name)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def typing_on(self, room_id: str, holder: object) -> None:
        self._typing.on(room_id, holder)

    def typing_off(self, room_id: str, holder: object) -> None:
        self._typing.off(room_id, holder)

    async def _send_typing(self, room_id: str, typing: bool, timeout_ms: int) -> None:
        if self.client is None:
            return
        try:
            await self.client.room_typing(room_id, typing, timeout=timeout_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("typing notice failed", error=describe(exc))

    async def send(self, room_id: str, content: dict[str, Any], must: bool) -> str | None:
        """Send an m.room.message; its event id, or None. With `must`, retried (with the same
        transaction id, so the server never shows it twice) until it lands or we give up."""
        transaction = str(uuid.uuid4())
        backoff = Backoff(1.0, RETRY_MAX_S)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            client = self.client
            if client is None:
                return None
            if room_id not in client.rooms:
                log.warning("not in that Matrix room (any more); not sending", room=room_id)
                return None
            try:
                if client.should_query_keys and room_id in client.encrypted_rooms:
                    # A member's new device must be known before the room key is shared.
                    with contextlib.suppress(LocalProtocolError):
                        await client.keys_query()
                    self._trust_allowed_devices(client)
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
                    self._remember_sent(response.event_id, content)
                    return str(response.event_id)
                problem = describe(response)
            if not must or attempt == SEND_ATTEMPTS:
                log.warning("could not send to Matrix", room=room_id, error=problem)
                return None
            await asyncio.sleep(backoff.next())
        return None

    def _remember_sent(self, event_id: str, content: dict[str, Any]) -> None:
        relation = content.get("m.relates_to") or {}
        if relation.get("rel_type") == "m.replace":  # an edit: the text is the original's now
            self._remember(relation["event_id"], self.user_id, content["m.new_content"]["body"])
        else:
            self._remember(event_id, self.user_id, content["body"])

    # -- logging in and syncing -----------------------------------------------------------------

    def _new_client(self, user: str) -> AsyncClient:
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=False,  # saved by us, once the daemon has the batch
            max_limit_exceeded=MAX_LIMIT_EXCEEDED,
            max_timeouts=2,  # then our own loops back off and retry
            max_timeout_retry_wait_time=RETRY_MAX_S,
            request_timeout=60,
        )
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = AsyncClient(self.homeserver, user, store_path=str(self.store_dir), config=config)
        client.add_event_callback(self._on_message, RoomMessageText)
        client.add_event_callback(self._on_megolm, MegolmEvent)
        client.add_event_callback(self._on_redaction, RedactionEvent)
        client.add_event_callback(self._on_invite, InviteMemberEvent)
        client.add_to_device_callback(self._on_to_device, ToDeviceEvent)
        client.add_response_callback(self._on_error_response, ErrorResponse)
        return client

    async def _run(self) -> None:
        backoff = Backoff(0.5, RETRY_MAX_S)
        relogged = False
        while not self._stopping:
            try:
                client = await log_in(
                    self.settings, self.homeserver, self.store_dir, self._new_client
                )
            except FatalLogin as exc:
                self.give_up(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("matrix login failed; retrying", error=describe(exc), in_s=delay)
                await asyncio.sleep(delay)
                continue
            self.client = client
            self.user_id = client.user_id
            self._state = SyncState.load(self.store_dir, client.user_id)
            try:
                await self._sync_forever(client)
                return
            except SavedLoginRejected as exc:
                await client.close()
                self.client = None
                password = self.settings.password
                if relogged or password is None or not password.get_secret_value():
                    self.give_up(f"the homeserver refused the saved login: {exc}")
                    return
                # Logged out elsewhere, or the crypto store was lost: a new login, a new device.
                log.warning("saved Matrix login refused; logging in again", error=str(exc))
                Session.forget(self.store_dir)
                relogged = True

    async def _sync_forever(self, client: AsyncClient) -> None:
        backoff = Backoff(0.5, RETRY_MAX_S)
        first = True
        while not self._stopping:
            try:
                if client.should_upload_keys:  # before the first sync: others can then encrypt
                    self._check(await client.keys_upload(), keys=True)
                if first:
                    await self._load_display_name(client)
                since = self._state.next_batch if first else None
                self._batch = Batch(initial=first and since is None)
                response = await client.sync(
                    timeout=0 if first else SYNC_TIMEOUT_MS,
                    sync_filter=SYNC_FILTER,
                    since=since,
                    # After a restart nio knows no room state: ask for all of it once.
                    full_state=True if first else None,
                )
                self._check(response)
            except (SavedLoginRejected, asyncio.CancelledError):
                raise
            except Exception as exc:
                self._connected = False
                delay = backoff.next()
                log.warning("matrix sync failed; retrying", error=describe(exc), in_s=delay)
                await asyncio.sleep(delay)
                continue
            assert isinstance(response, SyncResponse)
            if not self._connected:
                log.info("matrix connected", user=client.user_id, device=client.device_id)
            self._connected = True
            backoff.reset()
            first = False
            self._batch.next_batch = response.next_batch
            self._inbox.put_nowait(self._batch)
            self._batch = Batch()
            self._ready.set()
            await self._housekeeping(client)

    def _check(self, response: object, keys: bool = False) -> None:
        if not isinstance(response, ErrorResponse):
            return
        if is_token_error(response) or (keys and not is_transient(response)):
            # keys: the server holds other keys for this device (our crypto store was lost).
            raise SavedLoginRejected(describe(response))
        raise ConnectionError(describe(response))

    async def _load_display_name(self, client: AsyncClient) -> None:
        with contextlib.suppress(Exception):
            profile = await client.get_displayname(client.user_id)
            self._display_name = getattr(profile, "displayname", None)

    async def _housekeeping(self, client: AsyncClient) -> None:
        """What nio's sync_forever does between syncs, then trust and verification steps."""
        try:
            if client.outgoing_to_device_messages:
                await client.send_to_device_messages()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            self._trust_allowed_devices(client)
            await self._verifier.run(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("matrix key housekeeping failed", error=describe(exc))

    def _trust_allowed_devices(self, client: AsyncClient) -> None:
        """Trust on first use for allowed users' devices (README: "Encryption and trust")."""
        if client.olm is None:
            return
        for user_id, devices in client.device_store.items():
            if user_id == client.user_id or not matches(user_id, self.settings.allowed_users):
                continue
            for device in devices.values():
                if not device.verified and not device.blacklisted and not device.deleted:
                    client.verify_device(device)

    async def _save_state(self) -> None:
        if not self._state.dirty or not self.user_id:
            return
        self._state.dirty = False
        snapshot = self._state.snapshot(self.user_id)
        try:
            await asyncio.to_thread(write_private, self.store_dir / STATE_FILE, snapshot)
        except OSError as exc:
            self._state.dirty = True
            log.warning("could not save Matrix sync state", error=describe(exc))

    # -- callbacks (inside nio's sync: record only, never wait) -------------------------------

    def _remember(self, event_id: str, sender: str, text: str | None) -> None:
        self._senders[event_id] = sender
        self._senders.move_to_end(event_id)
        if text is not None:
            self._texts[event_id] = text
            self._texts.move_to_end(event_id)
        for cache in (self._senders, self._texts):
            while len(cache) > REMEMBERED_EVENTS:
                cache.popitem(last=False)

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        self._remember(event.event_id, event.sender, event.body)
        if sent_by_a_bot(event.source.get("content") or {}):
            return  # our own messages, or another hearthbot's: never a loop
        if event.sender != self.user_id:
            self._batch.items.append((room, event))

    async def _on_megolm(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if event.sender == self.user_id:
            return
        waiting = self._undecrypted.setdefault(event.session_id, [])
        if len(waiting) < 20 and len(self._undecrypted) < 200:  # bounded, whatever arrives
            waiting.append((room, event))
        self._batch.items.append((room, event))

    async def _on_redaction(self, room: MatrixRoom, event: RedactionEvent) -> None:
        self._batch.items.append((room, event))

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self.user_id or event.membership != "invite":
            return
        if room.room_id in self._joining:
            return
        s = self.settings
        if not matches(event.sender, s.allowed_users):
            log.info("invite ignored: sender not allowed", room=room.room_id, sender=event.sender)
            return
        if not room_allowed(room.room_id, s.allowed_rooms):
            log.info("invite ignored: room not allowed", room=room.room_id, sender=event.sender)
            return
        if event.content.get("is_direct"):
            self._state.mark_direct(room.room_id)
        self._joining.add(room.room_id)
        self.spawn(self._join(room.room_id), name="matrix-join")

    async def _join(self, room_id: str) -> None:
        try:
            if self.client is not None:
                response = await self.client.join(room_id)
                if isinstance(response, ErrorResponse):
                    log.warning("could not join", room=room_id, error=describe(response))
                else:
                    log.info("joined", room=room_id)
        finally:
            self._joining.discard(room_id)

    async def _on_to_device(self, event: ToDeviceEvent) -> None:
        if isinstance(event, RoomKeyEvent | ForwardedRoomKeyEvent):
            self._retry_undecrypted(event.session_id)
        else:
            self._verifier.handle(event)

    async def _on_error_response(self, response: ErrorResponse) -> None:
        # nio calls this for each 429 before it sleeps and retries: edits then slow down.
        if response.status_code == "M_LIMIT_EXCEEDED":
            wait_s = (response.retry_after_ms or 0) / 1000
            widened = min(MAX_EDIT_INTERVAL_S, max(self._edit_interval * 2, wait_s))
            self._limited_at = time.monotonic()
            if widened > self._edit_interval:
                log.info("rate limited by the homeserver; edits slow down", interval_s=widened)
                self._edit_interval = widened

    def _retry_undecrypted(self, session_id: str) -> None:
        waiting = self._undecrypted.pop(session_id, [])
        if not waiting or self.client is None:
            return
        batch = Batch()
        for room, event in waiting:
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception as exc:
                log.info("still cannot decrypt", room=room.room_id, error=describe(exc))
                continue
            if isinstance(decrypted, RoomMessageText):
                self._remember(decrypted.event_id, decrypted.sender, decrypted.body)
                batch.items.append((room, decrypted))
        if batch.items:
            log.info("decrypted messages once their key arrived", count=len(batch.items))
            self._inbox.put_nowait(batch)

    # -- the dispatcher: translate a batch and hand it to the daemon ---------------------------

    async def _dispatch(self) -> None:
        while True:
            batch = await self._inbox.get()
            for room, event in batch.items:
                try:
                    translated = await self._translate(room, event, batch.initial)
                    if translated is not None and self._sink is not None:
                        await self._sink(translated)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("could not handle a Matrix event", error=describe(exc))
            if batch.next_batch is not None:
                self._state.advance(batch.next_batch)
            await self._save_state()

    def _allowed(self, room: MatrixRoom, sender: str) -> bool:
        s = self.settings
        return matches(sender, s.allowed_users) and room_allowed(room.room_id, s.allowed_rooms)

    def _direct(self, room: MatrixRoom) -> bool:
        return is_direct(room.room_id in self._state.direct_rooms, room.member_count)

    def _channel_of(self, room_id: str, event_id: str) -> str:
        return channel_id(room_id, self._state.threads.get(event_id))

    def _bot_names(self, room: MatrixRoom) -> list[str]:
        user = room.users.get(self.user_id)
        names = [self._display_name or ""]
        if user is not None and user.display_name:
            names.append(user.display_name)
        return names

    async def _translate(self, room: MatrixRoom, event: Event, initial: bool) -> ChatEvent | None:
        if isinstance(event, RedactionEvent):
            channel = self._channel_of(room.room_id, event.redacts)
            return MessageDeleted(PLATFORM, channel, event.redacts)
        if not self._allowed(room, event.sender):
            return None
        if isinstance(event, MegolmEvent):
            if not initial:
                await self._undecryptable(room, event)
            return None
        if not isinstance(event, RoomMessageText):
            return None
        content: dict[str, Any] = event.source.get("content", {})
        root = thread_root(content)
        if root:
            self._state.remember_thread(event.event_id, root)
        replaced = edited_event(content)
        if replaced is not None:
            new = content.get("m.new_content")
            text = new.get("body") if isinstance(new, dict) else None
            if not isinstance(new, dict) or not isinstance(text, str):
                return None
            text = addressing(new, text, self.user_id, self._bot_names(room)).text
            return MessageEdited(PLATFORM, self._channel_of(room.room_id, replaced), replaced, text)
        if initial:
            return None  # the first sync replays history: it was never addressed to this device
        if not within_window(event.server_timestamp, time.time(), self.settings.catch_up_window_s):
            log.info("not answering an old message", room=room.room_id, event_id=event.event_id)
            return None
        target = reply_target(content)
        text = strip_reply_fallback(event.body) if target else event.body
        spoken_to = addressing(content, text, self.user_id, self._bot_names(room))
        direct = self._direct(room)
        replies_to_bot = (
            target is not None
            and not (direct or spoken_to.mentioned)  # then there is no need to look it up
            and await self._sent_by_me(room, target.event_id)
        )
        if not should_answer(direct, spoken_to.mentioned, replies_to_bot):
            return None
        reply_to = target.event_id if target and not target.falling_back else None
        return Incoming(
            platform=PLATFORM,
            channel_id=channel_id(room.room_id, root),
            message_id=event.event_id,
            author_id=event.sender,
            author_name=room.user_name(event.sender) or event.sender,
            text=spoken_to.text,
            is_direct=direct,
            mentions_bot=spoken_to.mentioned or replies_to_bot or direct,
            reply_to_id=reply_to,
            reply_to_text=self._texts.get(reply_to) if reply_to else None,
            is_admin=matches(event.sender, self.settings.admins),
            received_at=event.server_timestamp / 1000,
        )

    async def _sent_by_me(self, room: MatrixRoom, event_id: str) -> bool:
        sender = self._senders.get(event_id)
        if sender is None and self.client is not None:
            # Older than our memory (or from before a restart): ask the homeserver once.
            try:
                response = await self.client.room_get_event(room.room_id, event_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("could not look up a replied-to event", error=describe(exc))
                return False
            if isinstance(response, RoomGetEventResponse):
                fetched = response.event
                text = getattr(fetched, "body", None)
                if isinstance(fetched, MegolmEvent):
                    with contextlib.suppress(Exception):
                        text = getattr(self.client.decrypt_event(fetched), "body", None)
                sender = fetched.sender
                self._remember(event_id, fetched.sender, text if isinstance(text, str) else None)
        return sender == self.user_id

    async def _undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if not within_window(event.server_timestamp, time.time(), self.settings.catch_up_window_s):
            return
        log.warning(
            "cannot decrypt a message; requesting its key",
            room=room.room_id,
            sender=event.sender,
            session=event.session_id,
        )
        client = self.client
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
        if key in self._noticed_sessions or not self._direct(room):
            return
        self._noticed_sessions.add(key)
        content = message_content(
            UNDECRYPTABLE,
            reply_to=event.event_id,
            thread_root=thread_root(event.source.get("content", {})),
            msgtype="m.notice",
        )
        self.spawn(self._send_notice(room.room_id, content), name="matrix-notice")

    async def _send_notice(self, room_id: str, content: dict[str, Any]) -> None:
        await self.send(room_id, content, must=True)
