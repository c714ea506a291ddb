"""What was said while hearthbot was away from Discord.

Discord replays missed events only to a RESUMEd session. After a restart of hearthbot, or a
gap too long to resume, the new session starts from now: a question asked meanwhile would
be lost. So the adapter notes, per channel, the newest message it is done with there (one it
was asked, or its own) in `<data_dir>/discord/state.json`, and after each fresh session reads
the channels it talked in most recently back from there. What it finds goes through the
normal path (addressed? allowed?) unless it is older than `[discord] catch_up_window_s` or
already has a reply from the bot.

Positions are kept by adapters/discord/positions.py. A channel the bot never talked in (a
first DM sent during the gap) is out of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import discord
import structlog

from adapters.common.state_file import write_private
from adapters.discord.positions import Hold, Positions
from bot.backoff import Backoff

log = structlog.get_logger(__name__)

PER_CHANNEL = 100  # the newest messages within the window, at most (one REST call)
REMEMBERED_MESSAGES = 5000  # asked-message ids handled: a read-back one may also come live
SAVE_EVERY_S = 5.0
READ_ATTEMPTS = 3  # a channel's history, with 1 s and 2 s between tries
CLOCK_SKEW = timedelta(seconds=60)  # ours against Discord's: read back a little past READY


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one fresh session reads back: everything before `until` (READY, give or take
    clock skew); what comes later arrives live."""

    generation: int
    until: int
    holds: list[Hold]


async def missed_in(
    client: discord.Client, hold: Hold, until: int, window_s: float
) -> list[discord.Message]:
    """The messages worth passing on from a held channel, oldest first. Raises what
    discord.py raises (NotFound, Forbidden: a channel gone or closed)."""
    channel = client.get_channel(hold.channel_id) or client.get_partial_messageable(
        hold.channel_id, guild_id=hold.guild_id
    )
    if not isinstance(channel, discord.abc.Messageable):
        return []  # a category or forum id: nothing to read
    now = discord.utils.utcnow()
    start = discord.Object(read_after(hold.after, now, window_s))
    # Newest first from `until` back: the gap's latest messages are the ones read.
    pages = channel.history(
        limit=PER_CHANNEL, after=start, before=discord.Object(until), oldest_first=False
    )
    history = [m async for m in pages]
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
        self._snapshot: tuple[discord.Client, Snapshot] | None = None  # taken, not yet read
        self.generation = 0  # of the latest snapshot: an older read-back stops
        self._write: asyncio.Future[None] | None = None

    # -- a fresh session ------------------------------------------------------------------------

    def session_started(self, client: discord.Client) -> None:
        """On READY, before this session's first message can move a position on."""
        assert client.user is not None
        if self.positions is None or self.positions.user_id != client.user.id:
            self.positions = Positions.load(self.folder, client.user.id)
            self._held = []
        self.generation += 1
        # Channels an earlier read-back did not finish are read again; their old holds go
        # only once the new ones are in place.
        holds = self.positions.to_read(also=[hold.channel_id for hold in self._held])
        for hold in self._held:
            self.positions.release(hold)
        self._held = list(holds)
        until = discord.utils.time_snowflake(discord.utils.utcnow() + CLOCK_SKEW)
        self._snapshot = (client, Snapshot(self.generation, until, holds))

    def to_read_now(self, client: discord.Client) -> Snapshot | None:
        """Once the guilds are in (discord.py's ready): what to read back, once."""
        if self._snapshot is None or self._snapshot[0] is not client:
            return None
        snapshot, self._snapshot = self._snapshot[1], None
        return snapshot

    async def read_back(
        self, client: discord.Client, snapshot: Snapshot, current: Callable[[], bool]
    ) -> None:
        """Channel by channel, while `current()` holds (and no newer snapshot was taken).
        A channel is released once read; one that could not be read keeps its hold, so the
        next session, or the next start, reads it again."""
        found = 0

        def still() -> bool:
            return current() and snapshot.generation == self.generation

        for hold in snapshot.holds:
            if not still():
                break
            messages = await self._missed(client, hold, snapshot.until, still)
            if messages is None:
                continue
            for message in messages:
                if not still():
                    break
                found += 1
                try:
                    await self._pass_on(message)
                except Exception as exc:  # one bad message must not end the read-back
                    log.exception("discord: a message read back could not be handled")
                    self._failed(exc)
            if still() and self.positions is not None and hold in self._held:
                self._held.remove(hold)  # all of it passed on
                self.positions.release(hold)
        if found:
            log.info("discord: read back messages from while away", messages=found)

    async def _missed(
        self, client: discord.Client, hold: Hold, until: int, still: Callable[[], bool]
    ) -> list[discord.Message] | None:
        """None: not readable now (the hold stays). A channel gone or closed to the bot is
        forgotten, with nothing to read."""
        backoff = Backoff(1.0, 2.0)
        for attempt in range(READ_ATTEMPTS):
            try:
                return await missed_in(client, hold, until, self.window_s)
            except (discord.NotFound, discord.Forbidden):
                if self.positions is not None:
                    self.positions.forget(hold.channel_id)
                return []
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                if attempt + 1 == READ_ATTEMPTS or not still():
                    log.info(
                        "discord: could not read back", channel=hold.channel_id, error=str(exc)
                    )
                    return None
                await asyncio.sleep(backoff.next())
            except Exception as exc:  # a bug: seen in the logs and by the tests, never fatal
                log.exception("discord: reading back failed", channel=hold.channel_id)
                self._failed(exc)
                return None
        return None

    # -- each message -----------------------------------------------------------------------------

    def first_time(self, message_id: int) -> bool:
        """Whether an asked message is new here (a read-back one may also arrive live)."""
        if message_id in self._handled:
            return False
        self._handled[message_id] = None
        while len(self._handled) > REMEMBERED_MESSAGES:
            self._handled.popitem(last=False)
        return True

    def begin(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        if self.positions is not None:
            self.positions.begin(channel_id, guild_id, message_id)

    def end(
        self,
        channel_id: int,
        guild_id: int | None,
        message_id: int,
        left: bool,
        allowed: bool = True,
    ) -> None:
        if self.positions is not None:
            self.positions.end(channel_id, guild_id, message_id, left, allowed)

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
        with contextlib.suppress(Exception):  # reported by _written
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
