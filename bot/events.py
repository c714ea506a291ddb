"""The typed, platform-neutral language between adapters and the core.

An adapter turns a platform event into an `Incoming` and hands it to the daemon; the daemon
answers through a `ReplyHandle` that the adapter opens for that message. Nothing here knows
about Discord, Matrix or a terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Incoming:
    """One chat message the bot may answer, already stripped of the bot's own mention."""

    platform: str
    channel_id: str
    message_id: str
    author_id: str
    author_name: str
    text: str
    is_direct: bool = False
    # The platform id of the message this one replies to. Only the reference is kept: the
    # quoted text is read when a prompt is built (bot.prompt.quotes), so a deletion, a
    # redaction or `!forget` takes it out of every later prompt.
    reply_to_id: str | None = None
    # The server (Discord guild, Matrix space) the channel belongs to, for settings that
    # resolve global → server → channel.
    server_id: str | None = None
    # The adapter's verdict from its platform's access lists (IDs only, never display names).
    is_admin: bool = False
    # Spoken to: a mention, a reply to the bot, a DM. Adapters also deliver what is not (for
    # free-chat and name-triggered channels); the core decides by the channel's trigger mode
    # (bot.triggers). `named`: the bot's own name on its platform is in it, as a whole word.
    addressed: bool = True
    named: bool = False
    received_at: float = field(default_factory=time.time)
    # The file names of the pictures posted with it (png, jpeg, webp, gif), in order.
    images: tuple[str, ...] = ()

    @property
    def channel_key(self) -> str:
        """Unique across platforms: the key for history, settings and fairness."""
        return channel_key(self.platform, self.channel_id)

    @property
    def user_key(self) -> str:
        return user_key(self.platform, self.author_id)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> Incoming:
        data = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        data["images"] = tuple(data.get("images", ()))
        return cls(**{k: v for k, v in data.items() if k in names})


class ReplyHandle(Protocol):
    """How the core shows one answer on a platform. Every method must not raise on platform
    errors (a deleted message, a lost connection): the adapter logs and carries on."""

    async def typing(self) -> None:
        """Show that an answer is on its way (queued or generating)."""

    async def update(self, text: str) -> None:
        """The answer so far (the whole text, not a delta). Adapters may coalesce updates."""

    async def finish(self, text: str) -> None:
        """The final answer. Called exactly once unless `fail` is called instead."""

    async def fail(self, notice: str) -> None:
        """The answer could not be produced; show a short notice instead."""


@dataclass(frozen=True, slots=True)
class MessageEdited:
    """A user edited a message: the stored history follows, if `author_id` wrote it (an edit
    names its sender, and on Matrix anyone can send one for any event)."""

    platform: str
    channel_id: str
    message_id: str
    author_id: str
    text: str

    @property
    def user_key(self) -> str:
        return user_key(self.platform, self.author_id)


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """A user deleted (Matrix: redacted) a message: it is deleted from the store too, and
    from every quote of it. Message ids are unique on their platform, so `channel_id` is only
    where the adapter saw it (a Matrix thread's message may be named by its room)."""

    platform: str
    channel_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Stop the answer to one message while it is being written (e.g. a ⏹ reaction on that
    answer). It names the asked message (`message_id`), so no other answer can be cut."""

    platform: str
    channel_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class RegenerateRequested:
    """Answer `message` again, replacing the answer(s) given after it (e.g. a 🔁 reaction).
    Admitted like a new message from `requester_id` (the asker, or an admin), whose rate
    limit it counts against."""

    message: Incoming
    requester_id: str  # the platform's user ID
    requester_is_admin: bool = False  # the adapter's verdict, as for Incoming.is_admin

    @property
    def requester_key(self) -> str:
        return user_key(self.message.platform, self.requester_id)


ChatEvent = Incoming | MessageEdited | MessageDeleted | StopRequested | RegenerateRequested


def channel_key(platform: str, channel_id: str) -> str:
    return f"{platform}:{channel_id}"


def user_key(platform: str, user_id: str) -> str:
    """Unique across platforms: the key for rate limits, admins and !forget."""
    return f"{platform}:{user_id}"


def split_key(key: str) -> tuple[str, str]:
    """A channel or user key back into (platform, the platform's id)."""
    platform, _, platform_id = key.partition(":")
    return platform, platform_id


@dataclass(frozen=True, slots=True)
class Quoted:
    """A replied-to message as its platform has it now: read when a prompt is built, never
    stored, so what its author deleted or the bot forgot does not come back through a reply."""

    author_id: str  # the platform's id of its author, like Incoming.author_id
    author_name: str
    text: str
    reply_to_id: str | None = None  # what it replies to in turn: a reply chain goes on there
    # When it was written (Unix time, the platform's clock): `!forget` hides what its author
    # wrote before it (bot.forgotten). None: not known, so hidden if its author forgot.
    sent_at: float | None = None


class Outcome(Enum):
    """What the daemon did with an incoming message."""

    ACCEPTED = "accepted"  # queued; the answer arrives through a reply handle later
    COMMAND = "command"  # answered at once through a reply handle
    REFUSED = "refused"  # busy or rate limited; not stored (a notice may have been shown)
    IGNORED = "ignored"  # not for us (empty, not allowed)
    APPLIED = "applied"  # an edit, deletion, stop or regenerate request was carried out
    DEFERRED = "deferred"  # shutting down: saved as pending, answered after the restart


Sink = Callable[[ChatEvent], Awaitable[Outcome]]


class Adapter(Protocol):
    """One chat platform. An adapter only translates; it never touches the backend or the store."""

    name: str

    async def start(self, sink: Sink) -> None:
        """Connect and begin delivering messages to `sink`. Returns once started."""

    async def stop(self) -> None:
        """Disconnect. Must be safe to call more than once."""

    def open_reply(self, message: Incoming) -> ReplyHandle:
        """A handle for answering `message` (also for one restored from the store)."""

    async def refuse(self, message: Incoming, notice: str) -> None:
        """Tell the sender, briefly, that the message was not taken (e.g. a ⏳ reaction)."""

    def is_connected(self) -> bool:
        """Whether the platform connection is up (for readiness)."""

    @property
    def failure(self) -> asyncio.Future[str]:
        """Resolves with a one-line reason when the platform refuses us for good (bad token,
        a privileged intent not enabled): the daemon then exits non-zero with that line.
        Transient trouble (a dropped connection) is the adapter's to retry, never this."""


@runtime_checkable
class QuoteSource(Protocol):
    """What an adapter may also do: read a replied-to message the bot did not store. Without
    it, such a quote is left out of the prompt."""

    async def fetch_quote(self, channel_id: str, message_id: str) -> Quoted | None:
        """The message as the platform has it now (from a bounded cache the adapter keeps
        true on deletions and edits); None when it is gone or unreadable. Must not raise."""

    def forget_author(self, author_id: str, before: float) -> None:
        """`!forget`: drop what the adapter keeps of this author's messages written before
        `before` (a Unix time), and keep none of those it reads later."""


class ThreadChoices(Protocol):
    """Where an adapter opens a thread from a mention: each channel's choice, else its config."""

    def on(self, channel_id: str) -> bool:
        """Whether a mention in this channel opens a thread now."""

    def choose(self, channel_id: str, on: bool | None) -> None:
        """This channel's choice (None: back to the config). Must not raise."""

    def is_thread(self, channel_id: str) -> bool:
        """Whether the channel is a thread: a mention there is answered there, and the
        choice is its parent channel's."""


@runtime_checkable
class AutoThreads(Protocol):
    """What an adapter may also do: open a thread from a mention and answer there (Discord's
    auto_thread). The core keeps each channel's choice (`!autothread`) and tells the adapter
    at start and on each change; without one, the adapter's config decides."""

    @property
    def auto_threads(self) -> ThreadChoices:
        """The channels' choices, which the core sets."""


class AttachmentReader(Protocol):
    """Reads the attachments of a message an adapter passed on with its files only named."""

    async def read_attachments(self, message: Incoming) -> Incoming:
        """`message` with its text files read, as for one said to the bot; as it was when
        the adapter no longer has them. Must not raise."""


@runtime_checkable
class ReadsAttachments(Protocol):
    """What an adapter may also do: read, when the core asks, the files of a message not said
    to the bot (sent unread: most such messages are not for it) that the channel's trigger
    mode takes after all (`all`, `name`)."""

    @property
    def attachments(self) -> AttachmentReader:
        """The reader the core asks."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A posted picture's bytes as its adapter downloaded them: at most the cap asked for."""

    data: bytes | None  # None: it could not be downloaded (or decrypted)
    over_cap: bool = False  # larger than the cap: not downloaded (or not all of it)


class ImageReader(Protocol):
    """Downloads the pictures of a message an adapter delivered (Incoming.images)."""

    async def read_image(self, message: Incoming, index: int, max_bytes: int) -> Fetched:
        """The bytes of the message's `index`th picture, reading no more than `max_bytes`
        (+1, to know it is over); `Fetched(None)` when the adapter no longer knows the
        message, or the download or its decryption fails. Must not raise."""


@runtime_checkable
class ReadsImages(Protocol):
    """What an adapter may also do: download, when the core asks (only while the model sees
    images), the pictures of a message. Decoding them is the core's (bot.images)."""

    @property
    def images(self) -> ImageReader:
        """The reader the core asks."""
