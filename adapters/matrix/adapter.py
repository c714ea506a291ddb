"""Matrix (matrix-nio with end-to-end encryption): DMs and mentions in, streamed answers out.

The bot logs in with its password once and restores that login on every later start, so its
device and keys survive restarts (adapters/matrix/login.py). The parts: sync.py (the sync
loop and nio's callbacks), translate.py (nio events as the core's events), crypto.py (keys,
trust, verification, undecryptable messages), outbox.py (sending, rate limits, typing),
reply.py (one streamed answer); account.py is what they share. The decisions (access globs,
DM detection, is it for us) are pure functions in rules.py; content is built in format.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog
from nio import AsyncClient

from adapters.common.failure import ReportsFailure
from adapters.common.tasks import BackgroundTasks
from adapters.matrix.account import Account
from adapters.matrix.crypto import Crypto
from adapters.matrix.login import quiet_library_logs
from adapters.matrix.outbox import Outbox
from adapters.matrix.reply import MatrixReply
from adapters.matrix.sync import SyncLoop
from adapters.matrix.translate import PLATFORM, Translator
from bot.events import Incoming, Quoted, Sink
from bot.settings import BotSettings, MatrixSettings

log = structlog.get_logger(__name__)

STOP_GRACE_S = 5.0


class MatrixAdapter(ReportsFailure):
    """The Adapter the core sees for Matrix: starts the sync, opens replies, stops cleanly."""

    name = PLATFORM

    def __init__(self, settings: MatrixSettings, bot: BotSettings) -> None:
        self.account = Account.from_settings(settings, bot)
        self._tasks = BackgroundTasks(PLATFORM)
        self._ready = asyncio.Event()
        self.translator = Translator(self.account)
        self.images = self.translator.images  # bot.events.ReadsImages
        self.crypto = Crypto(self.account)
        self.outbox = Outbox(
            self.account,
            self._tasks,
            self._ready,
            before_send=self.crypto.before_send,
            sent=self.translator.remember_sent,
        )
        self.sync = SyncLoop(
            self.account, self.translator, self.crypto, self.outbox, self._ready, self.give_up
        )
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def settings(self) -> MatrixSettings:
        return self.account.settings

    @property
    def client(self) -> AsyncClient | None:
        return self.account.client

    @property
    def store_dir(self) -> Path:
        return self.account.store_dir

    # -- Adapter protocol -----------------------------------------------------------------------

    def update_settings(self, settings: MatrixSettings, bot: BotSettings) -> None:
        """SIGHUP: new access lists (allowed users and rooms, admins) without a new login.
        (`[bot]` admins are the core's to check.)"""
        self.account.settings = settings
        self.crypto.update_settings(settings)

    async def start(self, sink: Sink) -> None:
        """Returns at once: logging in and syncing happen in the background, so a homeserver
        that is down at boot delays Matrix only, never the daemon."""
        self.sync.sink = sink
        self._stopping = self.sync.stopping = False
        self._tasks.open()
        _ = self.failure
        quiet_library_logs()
        self._dispatcher = asyncio.create_task(self.sync.dispatch(), name="matrix-dispatch")
        self._runner = asyncio.create_task(self.sync.run(), name="matrix-sync")

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = self.sync.stopping = True  # no new work from here on
        self._tasks.close()
        self.sync.connected = False
        for task in (self._runner, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Answers being delivered get a moment to land; typing notices are simply dropped.
        self.outbox.typing.cancel()
        await self._tasks.stop(grace_s=STOP_GRACE_S, wait_s=1)
        await self.account.save_state()
        if self.account.client is not None:
            with contextlib.suppress(Exception):
                await self.account.client.close()
        log.info("matrix stopped")

    def is_connected(self) -> bool:
        return self.sync.connected

    def open_reply(self, message: Incoming) -> MatrixReply:
        return MatrixReply(self.outbox, message)

    async def refuse(self, message: Incoming, notice: str) -> None:
        """A short m.notice in reply (the daemon sends at most one a minute per user)."""
        await MatrixReply(self.outbox, message).fail(notice)

    async def fetch_quote(self, channel_id: str, message_id: str) -> Quoted | None:
        """A replied-to event as the homeserver has it now (bot.events.QuoteSource)."""
        return await self.translator.fetch_quote(channel_id, message_id)

    def forget_author(self, author_id: str, before: float) -> None:
        self.translator.forget_author(author_id, before)

    async def wait_ready(self) -> None:
        """Until logged in and synced once (for tests and benchmarks)."""
        await self._ready.wait()
