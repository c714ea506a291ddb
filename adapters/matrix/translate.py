"""nio's room events as the core's events: a message becomes an Incoming (flagged whether it
is for the bot; the room's trigger mode decides the rest), an edit a MessageEdited, a
redaction a MessageDeleted. The decisions themselves (access globs,
DM detection, is it for us) are pure functions in adapters/matrix/rules.py; this keeps what
they need: who sent recent events and what they said (is a reply to us? what does a reply
quote? — read by the core when it builds a prompt, so a redacted event is dropped here).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import OrderedDict
from typing import Any

import structlog
from nio import (
    Event,
    MatrixRoom,
    MegolmEvent,
    RedactionEvent,
    RoomEncryptedImage,
    RoomGetEventResponse,
    RoomMessageImage,
    RoomMessageText,
)

from adapters.common.failure import describe
from adapters.common.recent import RecentMessages
from adapters.matrix.account import Account
from adapters.matrix.media import MatrixImages
from adapters.matrix.rules import (
    addressing,
    channel_id,
    edited_event,
    localpart,
    matches,
    picture,
    picture_text,
    redaction_applies,
    reply_target,
    should_answer,
    split_channel,
    strip_reply_fallback,
    thread_root,
    within_window,
)
from bot.events import ChatEvent, Incoming, MessageDeleted, MessageEdited, Quoted
from bot.triggers import names_any

log = structlog.get_logger(__name__)

# The messages the core reads: text, and pictures (plain or encrypted media), which it names.
CHAT_MESSAGES = (RoomMessageText, RoomMessageImage, RoomEncryptedImage)

PLATFORM = "matrix"
REMEMBERED_EVENTS = 2000


class Translator:
    """Turns the Matrix events of a sync into the core's events, remembering recent ones."""

    def __init__(self, account: Account) -> None:
        self._account = account
        self._senders: OrderedDict[str, str] = OrderedDict()  # event id → sender
        self.recent = RecentMessages(REMEMBERED_EVENTS)  # event id → what it says
        self.images = MatrixImages(account)  # event id → its picture, to download

    def remember(
        self,
        event_id: str,
        sender: str,
        text: str | None,
        reply_to: str | None = None,
        sent_at: float | None = None,
    ) -> None:
        """What an event says (None: not text), who sent it, what it replies to, and when
        (the homeserver's time, in seconds)."""
        self._senders[event_id] = sender
        self._senders.move_to_end(event_id)
        while len(self._senders) > REMEMBERED_EVENTS:
            self._senders.popitem(last=False)
        seen = Quoted(sender, sender, text, reply_to, sent_at) if text is not None else None
        self.recent.saw(event_id, seen)

    def saw(self, event: RoomMessageText) -> None:
        """A message event as it arrived: its text without the quote of an older client's
        reply fallback (that quote may hold words redacted since), and what it replies to."""
        text, sent_at = _own_text(event), _sent_at(event)
        self.remember(event.event_id, event.sender, text, _replies_to(event), sent_at)

    def remember_sent(self, event_id: str, content: dict[str, Any]) -> None:
        """One of the bot's own messages (or edits), as sent."""
        user_id = self._account.user_id
        relation = content.get("m.relates_to") or {}
        if relation.get("rel_type") == "m.replace":  # an edit: the text is the original's now
            body = content["m.new_content"]["body"]
            self.remember(relation["event_id"], user_id, body, sent_at=time.time())
        else:
            self.remember(event_id, user_id, content["body"], sent_at=time.time())

    async def translate(self, room: MatrixRoom, event: Event, initial: bool) -> ChatEvent | None:
        """The core's event for this one, or None when it is not for the core. `initial`:
        from the first sync, which replays history that was never addressed to this device."""
        account = self._account
        if isinstance(event, RedactionEvent):
            self.recent.deleted(event.redacts)  # whoever sent it: a quote is looked up again
            return await self._deletion(room, event)
        if not account.allowed(room, event.sender) or not isinstance(event, CHAT_MESSAGES):
            return None  # (an undecryptable MegolmEvent is adapters.matrix.crypto's)
        content: dict[str, Any] = event.source.get("content", {})
        root = thread_root(content)
        if root:
            account.state.remember_thread(event.event_id, root)
        replaced = edited_event(content)
        if replaced is not None:
            new = content.get("m.new_content")
            text = new.get("body") if isinstance(new, dict) else None
            if not isinstance(new, dict) or not isinstance(text, str):
                return None
            self.recent.edited(replaced, event.sender, text)  # only its sender's edit counts
            text = addressing(new, text, account.user_id, self._bot_names(room)).text
            channel = self._channel_of(room.room_id, replaced)
            return MessageEdited(PLATFORM, channel, replaced, event.sender, text)
        if initial:
            return None
        window_s = account.settings.catch_up_window_s
        if not within_window(event.server_timestamp, time.time(), window_s):
            log.info("not answering an old message", room=room.room_id, event_id=event.event_id)
            return None
        target = reply_target(content)
        text = strip_reply_fallback(event.body) if target else event.body
        image = picture(content)
        if image is not None:
            text = picture_text(*image)
            self.images.saw(event.event_id, content)
        spoken_to = addressing(content, text, account.user_id, self._bot_names(room))
        direct = account.direct(room)
        replies_to_bot = (
            target is not None
            and not (direct or spoken_to.mentioned)  # then there is no need to look it up
            and await self._sent_by_me(room, target.event_id)
        )
        # Not spoken to: passed on all the same, for the room's trigger mode (bot.triggers).
        addressed = should_answer(direct, spoken_to.mentioned, replies_to_bot)
        names = [account.user_id, localpart(account.user_id), *self._bot_names(room)]
        reply_to = target.event_id if target and not target.falling_back else None
        return Incoming(
            platform=PLATFORM,
            channel_id=channel_id(room.room_id, root),
            message_id=event.event_id,
            author_id=event.sender,
            author_name=room.user_name(event.sender) or event.sender,
            text=spoken_to.text,
            is_direct=direct,
            reply_to_id=reply_to,
            is_admin=matches(event.sender, account.settings.admins),
            addressed=addressed,
            named=names_any(spoken_to.text, names),
            received_at=event.server_timestamp / 1000,
            images=(image[0],) if image is not None else (),
        )

    def _channel_of(self, room_id: str, event_id: str) -> str:
        return channel_id(room_id, self._account.state.threads.get(event_id))

    def _bot_names(self, room: MatrixRoom) -> list[str]:
        user = room.users.get(self._account.user_id)
        names = [self._account.display_name or ""]
        if user is not None and user.display_name:
            names.append(user.display_name)
        return names

    async def _deletion(self, room: MatrixRoom, event: RedactionEvent) -> MessageDeleted | None:
        """A redaction, when it is its author's or a moderator's (checked before anything else
        is done for it: any room member can send one)."""
        moderates = room.power_levels.can_user_redact(event.sender)
        author = None if moderates else await self._sender_of(room, event.redacts)
        if not redaction_applies(event.sender, author, moderates):
            log.info("redaction ignored: not its author's", room=room.room_id, sender=event.sender)
            return None
        channel = self._channel_of(room.room_id, event.redacts)
        return MessageDeleted(PLATFORM, channel, event.redacts)

    async def _sent_by_me(self, room: MatrixRoom, event_id: str) -> bool:
        return await self._sender_of(room, event_id) == self._account.user_id

    async def _sender_of(self, room: MatrixRoom, event_id: str) -> str | None:
        """Who sent an event: remembered, or (older than our memory, or from before a restart)
        asked of the homeserver once. None when it cannot say."""
        if event_id not in self._senders:
            await self._look_up(room.room_id, event_id)
        return self._senders.get(event_id)

    async def fetch_quote(self, channel_id: str, message_id: str) -> Quoted | None:
        """A replied-to event's text (bot.events.QuoteSource): remembered, or asked of the
        homeserver, which has nothing to say of a redacted one."""
        room_id, _ = split_channel(channel_id)
        if message_id not in self.recent:
            await self._look_up(room_id, message_id)
        known = self.recent.get(message_id)
        if known is None:
            return None
        client = self._account.client
        room = client.rooms.get(room_id) if client is not None else None
        name = room.user_name(known.author_id) if room is not None else None
        return dataclasses.replace(known, author_name=name or known.author_name)

    def forget_author(self, author_id: str, before: float) -> None:
        self.recent.forget_author(author_id, before)

    async def _look_up(self, room_id: str, event_id: str) -> None:
        """Ask the homeserver for one event (decrypted if need be) and remember it; a failed
        request remembers nothing, so a later look-up tries again."""
        client = self._account.client
        if client is None:
            return
        try:
            response = await client.room_get_event(room_id, event_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("could not look up a replied-to event", error=describe(exc))
            return
        if not isinstance(response, RoomGetEventResponse):
            return
        fetched = response.event
        if isinstance(fetched, MegolmEvent):
            with contextlib.suppress(Exception):
                fetched = client.decrypt_event(fetched)
        if isinstance(fetched, CHAT_MESSAGES):
            text, sent_at = _own_text(fetched), _sent_at(fetched)
            self.remember(event_id, fetched.sender, text, _replies_to(fetched), sent_at)
        else:
            self.remember(event_id, fetched.sender, None)


def _sent_at(event: RoomMessageText) -> float | None:
    """When the homeserver says the event was sent, in seconds; None if it does not say."""
    stamp = getattr(event, "server_timestamp", None)
    return stamp / 1000 if isinstance(stamp, int) and stamp > 0 else None


def _replies_to(event: RoomMessageText) -> str | None:
    target = reply_target(event.source.get("content") or {})
    return target.event_id if target is not None and not target.falling_back else None


def _own_text(event: RoomMessageText) -> str:
    content = event.source.get("content") or {}
    return strip_reply_fallback(event.body) if reply_target(content) else event.body
