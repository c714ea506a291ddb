"""How one answer appears on Discord: typing, a reply, coalesced edits, a final edit.

The first text is sent at once as a reply to the user's message; later text is shown by
editing, at most once per `edit_interval_s` (Discord rate-limits edits, and a flickering
message is hard to read), then one final edit. Past 2000 characters the answer continues in
new messages, split by `adapters.common.split.split_message` (never inside a code block).

Every platform error is handled here and never raised to the core: a 404 means the reply
was deleted (stop quietly), a 403 means the bot may not write there (logged once per
channel), anything else is logged and the next edit tries again. The final text has no next
edit, and the answer is already stored, so it is tried again in the background with backoff
(FINAL_TRIES in all) while the core goes on to the next answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

import aiohttp
import discord
import structlog

from adapters.common.failure import describe
from adapters.common.split import split_message
from adapters.discord.text import LIMIT
from bot.backoff import Backoff
from bot.events import Incoming

log = structlog.get_logger(__name__)

NONE = discord.AllowedMentions.none()
# Discord shows "typing…" for about 10 s per call; renew a little before it lapses.
TYPING_RENEW_S = 8.0
# A reply that never comes must not type forever (e.g. a long queue).
TYPING_MAX_S = 15 * 60.0
# The final text: tries in all, waits doubling from the adapter's retry_s up to the cap
# (with the default 5 s: about four minutes of a failing Discord before giving up).
FINAL_TRIES = 8
FINAL_RETRY_CAP_S = 60.0


class Outbox(Protocol):
    """What a reply sends through: its adapter's channels, login and background tasks, and
    whom it tells what became of its messages (the adapter implements it)."""

    edit_interval_s: float
    retry_s: float  # the first wait before trying a failed final text again

    def channel(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable: ...

    def logged_in(self) -> bool: ...

    async def wait_logged_in(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None: ...

    def sent(self, message_id: int, reply: MessageReply) -> None: ...

    def forbidden(self, channel_id: int, error: discord.HTTPException) -> None: ...

    async def reply_deleted(self, reply: MessageReply) -> None: ...


class Gone(Exception):
    """The platform will not take more from this reply (deleted message, no permission)."""


class MessageReply:
    """A `bot.events.ReplyHandle` for an answer to a Discord message. Works from IDs only,
    so it also answers a message restored from the store after a restart."""

    def __init__(self, outbox: Outbox, message: Incoming, reuse: list[int] | None = None) -> None:
        self.message = message
        self._outbox = outbox
        self._channel_id = int(message.channel_id)
        self._guild_id = int(message.server_id) if message.server_id else None
        # (message id, content shown); None content: an earlier answer's message, reused
        # when the answer is regenerated in place.
        self._sent: list[tuple[int, str | None]] = [(mid, None) for mid in reuse or []]
        self._shown = ""  # the whole text on screen, from this handle
        self._latest: str | None = None  # newest text not shown yet
        self._last_show = 0.0
        self._lock = asyncio.Lock()  # one sync at a time, in order
        self._flusher: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self.closed = False  # finish or fail was called
        self.dead = False  # Discord refused (404/403): make no more calls
        self.done = asyncio.Event()
        for mid, _ in self._sent:
            outbox.sent(mid, self)

    @property
    def message_ids(self) -> list[int]:
        return [mid for mid, _ in self._sent]

    @property
    def shown(self) -> str:
        """The whole text on screen from this reply so far."""
        return self._shown

    # -- the ReplyHandle protocol ---------------------------------------------------------------

    async def typing(self) -> None:
        if self.closed or self.dead or self._shown:
            return
        if self._typing is None or self._typing.done():
            self._typing = self._outbox.spawn(self._keep_typing(), "discord-typing")

    async def update(self, text: str) -> None:
        if self.closed or self.dead or not text.strip():
            return
        self._latest = text
        if self._flusher is None or self._flusher.done():
            self._flusher = self._outbox.spawn(self._flush(), "discord-edits")

    async def finish(self, text: str) -> None:
        await self._close(text)

    async def fail(self, notice: str) -> None:
        # Keep what was already shown: a partial answer plus why it ended beats a bare notice.
        await self._close(f"{self._shown}\n\n{notice}" if self._shown else notice)

    # -- internals ------------------------------------------------------------------------------

    async def _close(self, text: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_typing()
        flusher = self._flusher
        if flusher is not None and not flusher.done() and not self._lock.locked():
            flusher.cancel()  # only while it waits: a request in flight must finish and count
        tried = self._outbox.logged_in()
        later: asyncio.Task[None] | None = None
        try:
            if tried and await self._final(text):
                return
            # Not logged in yet (a message restored at startup, or Discord is down), or
            # Discord failed for a moment: show it later, without holding up the core's
            # worker meanwhile.
            later = self._outbox.spawn(self._final_later(text, tried), "discord-final")
        finally:
            if later is None:
                self.done.set()  # shown, gone, or never to be (the adapter is stopping)

    async def _final(self, text: str) -> bool:
        """One try at the final text; True when nothing is left to do (shown, or gone)."""
        async with self._lock:
            return self.dead or await self._show(text, final=True)

    async def _final_later(self, text: str, tried: bool) -> None:
        """Try the final text until it is shown, FINAL_TRIES in all, backing off between."""
        backoff = Backoff(self._outbox.retry_s, FINAL_RETRY_CAP_S)
        try:
            for attempt in range(tried, FINAL_TRIES):
                if attempt:
                    await asyncio.sleep(backoff.next())
                await self._outbox.wait_logged_in()
                if await self._final(text):
                    return
            log.error("discord: gave up showing an answer", channel=self._channel_id)
        finally:
            self.done.set()

    async def _keep_typing(self) -> None:
        await self._outbox.wait_logged_in()
        channel = self._outbox.channel(self._channel_id, self._guild_id)
        deadline = time.monotonic() + TYPING_MAX_S
        while not (self.closed or self.dead or self._shown) and time.monotonic() < deadline:
            try:
                await self._call(channel.typing())
            except Gone:
                return
            await asyncio.sleep(TYPING_RENEW_S)

    def _stop_typing(self) -> None:
        if self._typing is not None and not self._typing.done():
            self._typing.cancel()

    async def _flush(self) -> None:
        """Show the newest text, waiting so that shows are at least edit_interval_s apart."""
        await self._outbox.wait_logged_in()
        while self._latest is not None and not (self.closed or self.dead):
            if self._last_show:  # the first text goes out at once, later ones are spaced
                wait = self._last_show + self._outbox.edit_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            async with self._lock:
                text, self._latest = self._latest, None
                if text is None or self.closed or self.dead:
                    return
                self._last_show = time.monotonic()
                await self._show(text, final=False)

    async def _show(self, text: str, final: bool) -> bool:
        """Make the messages on screen read `text`: edit what changed, send what is new.
        False when a transient failure left the screen behind."""
        chunks = split_message(text, LIMIT) if text.strip() else []
        if not chunks:
            return True
        channel = self._outbox.channel(self._channel_id, self._guild_id)
        try:
            complete = await self._sync(channel, chunks)
            if final and complete:
                await self._drop_extra(channel, len(chunks))
        except Gone:
            self.dead = True
            if not final:
                await self._outbox.reply_deleted(self)
            return True
        if complete:
            self._shown = text
            self._stop_typing()  # also when only edits were needed (a regenerated answer)
        return complete

    async def _sync(self, channel: discord.PartialMessageable, chunks: list[str]) -> bool:
        """False when a transient error left the screen behind (the next show catches up)."""
        for index, chunk in enumerate(chunks):
            if index < len(self._sent):
                mid, shown = self._sent[index]
                if shown == chunk:
                    continue
                message = channel.get_partial_message(mid)
                if await self._call(message.edit(content=chunk, allowed_mentions=NONE)) is None:
                    return False
                self._sent[index] = (mid, chunk)
                continue
            reference = self._reference(index)
            sent = await self._call(
                channel.send(chunk, reference=reference, allowed_mentions=NONE)
                if reference is not None
                else channel.send(chunk, allowed_mentions=NONE)
            )
            if sent is None:
                return False
            self._sent.append((sent.id, chunk))
            self._outbox.sent(sent.id, self)
        return True

    async def _drop_extra(self, channel: discord.PartialMessageable, keep: int) -> None:
        """A regenerated answer shorter than the one it replaces leaves messages over."""
        extra, self._sent = self._sent[keep:], self._sent[:keep]
        for mid, _ in extra:
            with contextlib.suppress(Gone):
                await self._call(channel.get_partial_message(mid).delete())

    def _reference(self, index: int) -> discord.MessageReference | None:
        if index > 0:
            return None  # the continuation follows the first part
        if self.message.message_id == self.message.channel_id:
            return None  # a thread opened from the question (same id): it is right above
        return discord.MessageReference(
            message_id=int(self.message.message_id),
            channel_id=self._channel_id,
            guild_id=self._guild_id,
            fail_if_not_exists=False,  # the question was deleted: still answer, unthreaded
        )

    async def _call(self, request: Awaitable[Any]) -> Any:
        """One REST call. Raises Gone for 404/403; other failures are logged, return None."""
        try:
            return await request
        except discord.NotFound:
            log.info("discord reply gone (404)", channel=self._channel_id)
            raise Gone from None
        except discord.Forbidden as exc:
            self._outbox.forbidden(self._channel_id, exc)
            raise Gone from None
        except discord.HTTPException as exc:
            log.warning("discord request failed", status=exc.status, code=exc.code)
        except Exception as exc:
            # A connection error, or the client being replaced while Discord is unreachable:
            # never the core's problem (the next show tries again).
            log.warning("discord request failed", error=describe(exc))
        return None


class InteractionReply:
    """A `bot.events.ReplyHandle` for a slash command: answers the interaction (ephemeral
    where sensible). Discord wants an answer within 3 s; `defer` buys 15 minutes."""

    def __init__(self, interaction: discord.Interaction, ephemeral: bool) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.answered = False
        self._lock = asyncio.Lock()

    async def typing(self) -> None:
        pass  # a command answers at once; Discord shows its own "thinking" when deferred

    async def update(self, text: str) -> None:
        pass  # commands do not stream

    async def finish(self, text: str) -> None:
        await self._respond(text)

    async def fail(self, notice: str) -> None:
        await self._respond(notice)

    async def defer(self) -> None:
        async with self._lock:
            if not self.answered and not self.interaction.response.is_done():
                with contextlib.suppress(discord.HTTPException):
                    await self.interaction.response.defer(ephemeral=self.ephemeral, thinking=True)

    async def _respond(self, text: str) -> None:
        chunks = split_message(text, LIMIT) or ["…"]
        async with self._lock:
            if self.answered:
                return
            self.answered = True
            response = self.interaction.response
            try:
                if not response.is_done():
                    await response.send_message(
                        chunks[0], ephemeral=self.ephemeral, allowed_mentions=NONE
                    )
                else:  # deferred: the "thinking…" message becomes the answer
                    await self.interaction.edit_original_response(
                        content=chunks[0], allowed_mentions=NONE
                    )
                for chunk in chunks[1:]:
                    await self.interaction.followup.send(
                        chunk, ephemeral=self.ephemeral, allowed_mentions=NONE
                    )
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                # Usually 10062 "Unknown interaction": it expired before we answered.
                log.warning("discord interaction answer failed", error=str(exc))
