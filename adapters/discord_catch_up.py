"""What was said while hearthbot was away from Discord.

Discord replays missed events only to a RESUMEd session. After a restart of hearthbot, or a
gap too long to resume, the new session starts from now: a question asked meanwhile would
be lost. So the adapter notes, per channel, the newest message it is done with there (one it
was asked, or its own) in `<data_dir>/discord/state.json`, and after each fresh session reads
the channels it talked in most recently back from there. What it finds goes through the
normal path (addressed? allowed?) unless it is older than `[discord] catch_up_window_s` or
already has a reply from the bot.

A position never passes a message still being handled, nor, while a channel is being read
back, the point reading started from: a crash then costs a second look, never a message.
A channel the bot never talked in (a first DM sent during the gap) is out of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import discord
import structlog

from adapters.state_file import read_json, write_private

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"
MAX_CHANNELS = 50  # the channels talked in most recently are read back; one REST call each
PER_CHANNEL = 100  # the newest messages within the window, at most (one REST call)
KEPT_CHANNELS = 1000
REMEMBERED_MESSAGES = 5000  # asked-message ids handled: a read-back one may also come live
SAVE_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message from a channel's history, as far as deciding goes."""

    id: int
    age_s: float
    author_is_me: bool
    replies_to: int | None  # the message it replies to, if any


def to_answer(history: Iterable[Fetched], window_s: float) -> list[int]:
    """Ids of the messages worth passing on, oldest first: young enough and not answered by
    the bot already (its reply is newer, so it is in the same history)."""
    messages = sorted(history, key=lambda m: m.id)
    answered = {m.replies_to for m in messages if m.author_is_me and m.replies_to is not None}
    return [
        m.id
        for m in messages
        if not m.author_is_me and m.age_s <= window_s and m.id not in answered
    ]


def read_after(position: int, now: datetime, window_s: float) -> int:
    """Where reading a channel back starts: after the position, but no earlier than the
    window (an older message would not be answered anyway)."""
    return max(position, discord.utils.time_snowflake(now - timedelta(seconds=window_s)))


@dataclass(slots=True)
class Positions:
    """Per channel: the newest message the bot is done with, and the ones it is not done
    with yet (in flight, or a read-back in progress). For one bot account."""

    path: Path
    user_id: int
    done: dict[int, tuple[int, int | None]] = field(default_factory=dict)  # → (id, server)
    open: dict[int, Counter[int]] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, folder: Path, user_id: int) -> Positions:
        positions = cls(folder / STATE_FILE, user_id)
        data = read_json(positions.path)
        # Another bot account talks in other channels: it starts afresh.
        if data is None or data.get("user_id") != user_id:
            return positions
        channels = data.get("channels")
        for key, value in (channels if isinstance(channels, dict) else {}).items():
            if not (isinstance(value, list) and len(value) == 2 and str(key).isdecimal()):
                continue  # a damaged entry costs that channel's catch-up, nothing more
            message_id, guild_id = value
            if isinstance(message_id, int) and (guild_id is None or isinstance(guild_id, int)):
                positions.done[int(key)] = (message_id, guild_id)
        return positions

    def begin(self, channel_id: int, message_id: int) -> None:
        self.open.setdefault(channel_id, Counter())[message_id] += 1

    def end(self, channel_id: int, guild_id: int | None, message_id: int, done: bool) -> None:
        """`done`: handled (answered, refused, not for the bot); else left for a read-back
        (the adapter was stopping)."""
        self._close(channel_id, message_id)
        if done:
            self.saw(channel_id, guild_id, message_id)

    def saw(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        """A message there is done with (the bot's own, say)."""
        known = self.done.get(channel_id)
        if known is None or message_id > known[0]:
            self.done[channel_id] = (message_id, guild_id)
            self.dirty = True

    def to_read(self) -> list[tuple[int, int, int | None]]:
        """(channel, read after this message, server), most recently talked in first; each
        held (see `release`) so the position stays until that channel has been read."""
        ranked = sorted(self.done.items(), key=lambda item: item[1][0], reverse=True)
        chosen = [(c, self.position(c), guild) for c, (_, guild) in ranked[:MAX_CHANNELS]]
        for channel, at, _ in chosen:
            self.begin(channel, at + 1)
        return chosen

    def position(self, channel_id: int) -> int:
        """The newest message done with, held back before any not done with yet."""
        at = self.done[channel_id][0]
        pending = self.open.get(channel_id)
        return min(at, min(pending) - 1) if pending else at

    def release(self, channel_id: int, after: int) -> None:
        self._close(channel_id, after + 1)

    def forget(self, channel_id: int) -> None:
        """A channel that is gone, or closed to the bot: not worth a call at every start."""
        if self.done.pop(channel_id, None) is not None:
            self.dirty = True

    def payload(self) -> dict[str, Any] | None:
        """What to write now (None: nothing changed). Taken on the event loop, so writing it
        elsewhere cannot race the next message."""
        if not self.dirty:
            return None
        self.dirty = False
        newest = sorted(self.done.items(), key=lambda item: item[1][0], reverse=True)
        self.done = dict(newest[:KEPT_CHANNELS])
        channels = {str(c): [self.position(c), guild] for c, (_, guild) in self.done.items()}
        return {"user_id": self.user_id, "channels": channels}

    def _close(self, channel_id: int, message_id: int) -> None:
        pending = self.open.get(channel_id)
        if pending is None:
            return
        pending[message_id] -= 1
        if pending[message_id] <= 0:
            del pending[message_id]
        if not pending:
            del self.open[channel_id]
        self.dirty = True  # a position held back may move on now


async def missed_in(
    client: discord.Client, channel_id: int, after: int, guild_id: int | None, window_s: float
) -> list[discord.Message]:
    """The messages worth passing on from a channel, oldest first. Raises what discord.py
    raises (NotFound, Forbidden: a channel gone or closed)."""
    channel = client.get_channel(channel_id) or client.get_partial_messageable(
        channel_id, guild_id=guild_id
    )
    if not isinstance(channel, discord.abc.Messageable):
        return []  # a category or forum id: nothing to read
    now = discord.utils.utcnow()
    start = discord.Object(read_after(after, now, window_s))
    # Newest first from Discord: a busy channel's latest messages are the ones read.
    history = [m async for m in channel.history(limit=PER_CHANNEL, after=start, oldest_first=False)]
    me = client.user
    wanted = set(
        to_answer(
            (
                Fetched(
                    m.id,
                    (now - m.created_at).total_seconds(),
                    me is not None and m.author.id == me.id,
                    m.reference.message_id if m.reference else None,
                )
                for m in history
            ),
            window_s,
        )
    )
    return sorted((m for m in history if m.id in wanted), key=lambda m: m.id)


Hold = tuple[int, int, int | None]  # (channel, read after, server)


class CatchUp:
    """The adapter's side: positions for the bot's account, saved every few seconds and at
    stop, and the read-back after each fresh session. `pass_on` is the adapter's normal
    path for a message; `failed` records an error the tests must see."""

    def __init__(
        self,
        folder: Path,
        window_s: float,
        pass_on: Callable[[discord.Message], Awaitable[None]],
        failed: Callable[[BaseException], None],
    ) -> None:
        self.folder = folder
        self.window_s = window_s
        self.positions: Positions | None = None  # loaded once the bot's user id is known
        self._pass_on = pass_on
        self._failed = failed
        self._handled: OrderedDict[int, None] = OrderedDict()
        self._held: list[Hold] = []  # the latest snapshot's channels not read back yet
        self._to_read: tuple[discord.Client, list[Hold]] | None = None
        self._write: asyncio.Future[None] | None = None

    # -- a fresh session ------------------------------------------------------------------------

    def session_started(self, client: discord.Client) -> None:
        """On READY, before this session's first message can move a position on."""
        assert client.user is not None
        if self.positions is None or self.positions.user_id != client.user.id:
            self.positions = Positions.load(self.folder, client.user.id)
            self._held = []
        taken = self.positions.to_read()  # an earlier, unfinished read-back still holds
        for channel_id, after, _ in self._held:
            self.positions.release(channel_id, after)
        self._held = list(taken)
        self._to_read = (client, taken)

    def to_read_now(self, client: discord.Client) -> list[Hold]:
        """Once the guilds are in (discord.py's ready): what to read back, once."""
        if self._to_read is None or self._to_read[0] is not client:
            return []
        to_read, self._to_read = self._to_read[1], None
        return to_read

    async def read_back(
        self, client: discord.Client, to_read: list[Hold], current: Callable[[], bool]
    ) -> None:
        """Channel by channel; stops when `current()` turns false (a newer session or a stop
        takes over, and the holds left keep those positions)."""
        found = 0
        for hold in to_read:
            if not current():
                return
            channel_id, after, guild_id = hold
            try:
                messages = await missed_in(client, channel_id, after, guild_id, self.window_s)
            except (discord.NotFound, discord.Forbidden):
                messages = []
                if self.positions is not None:
                    self.positions.forget(channel_id)
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                log.info(
                    "discord: could not read a channel back", channel=channel_id, error=str(exc)
                )
                messages = []
            for message in messages:
                if not current():
                    return
                found += 1
                try:
                    await self._pass_on(message)
                except Exception as exc:  # one bad message must not end the read-back
                    log.exception("discord: a message read back could not be handled")
                    self._failed(exc)
            if current() and self.positions is not None and hold in self._held:
                self._held.remove(hold)
                self.positions.release(channel_id, after)
        if found:
            log.info("discord: read back messages from while away", messages=found)

    # -- each message -----------------------------------------------------------------------------

    def first_time(self, message_id: int) -> bool:
        """Whether an asked message is new here (a read-back one may also arrive live)."""
        if message_id in self._handled:
            return False
        self._handled[message_id] = None
        while len(self._handled) > REMEMBERED_MESSAGES:
            self._handled.popitem(last=False)
        return True

    def begin(self, channel_id: int, message_id: int) -> None:
        if self.positions is not None:
            self.positions.begin(channel_id, message_id)

    def end(self, channel_id: int, guild_id: int | None, message_id: int, done: bool) -> None:
        if self.positions is not None:
            self.positions.end(channel_id, guild_id, message_id, done)

    def saw_own(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        if self.positions is not None:
            self.positions.saw(channel_id, guild_id, message_id)

    # -- on disk ----------------------------------------------------------------------------------

    async def save(self) -> None:
        """Write the positions if they changed. One write at a time: a save cancelled while
        its thread runs is waited for by the next."""
        if self.positions is None:
            return
        if self._write is not None and not self._write.done():
            await asyncio.wait([self._write])
        payload = self.positions.payload()
        if payload is None:
            return
        self._write = asyncio.ensure_future(
            asyncio.to_thread(write_private, self.positions.path, payload)
        )
        self._write.add_done_callback(self._written)
        with contextlib.suppress(OSError):
            await asyncio.shield(self._write)

    async def save_often(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            await self.save()

    def _written(self, write: asyncio.Future[None]) -> None:
        if write.cancelled() or (error := write.exception()) is None:
            return
        log.warning("discord: could not save where channels were left", error=str(error))
        if self.positions is not None:
            self.positions.dirty = True
