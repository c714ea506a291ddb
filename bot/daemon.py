"""The daemon: wires adapters → intake (bot.intake) → fair queue → responder (bot.responder,
up to `backend.slots` answers at once), with retention (bot.retention) beside them, and owns
their lifecycle: start, stop, reload."""

from __future__ import annotations

import contextlib

import structlog

from bot.answering import Job
from bot.commands.context import CommandContext
from bot.commands.runner import CommandRunner
from bot.commands.tuning import restore_auto_threads
from bot.events import Adapter, ChatEvent, Incoming, Outcome, Quoted
from bot.intake import Intake
from bot.live import Live
from bot.model.backend import Backend, engine_stats
from bot.model.types import Generation
from bot.observer import Observer
from bot.personas import PersonaSet
from bot.prompt.builder import ContextBuilder
from bot.prompt.quotes import fetch_quote
from bot.responder import Responder
from bot.retention import Retention
from bot.scheduler import FairQueue
from bot.settings import Settings
from bot.status import DaemonStatus, is_connected
from bot.store import Store

log = structlog.get_logger(__name__)


class Daemon:
    """hearthbot's core, wired: what `hearthbot run`, the tests and the benchmarks start."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        backend: Backend,
        personas: PersonaSet,
        adapters: dict[str, Adapter],
    ) -> None:
        self.store = store
        self.backend = backend
        self.live = Live(settings, personas, adapters)
        self.queue: FairQueue[Job] = FairQueue(
            settings.queue.max_pending, settings.queue.per_user_per_minute
        )
        self.context = ContextBuilder(
            backend,
            store,
            backend.info.n_ctx,
            self._fetch_quote,
            lambda: self.live.settings.bot.reply_chain_tokens,
            lambda: self.live.settings.images.max_images_in_context,
        )
        self.responder = Responder(self.live, store, backend, self.queue, self.context)
        commands = CommandContext(
            live=self.live,
            store=store,
            model=backend,
            status=self.status,
            forget_queued=self.responder.forget_queued,
            stop_answers=self.responder.stop_answers,
            reused_tokens=self.responder.reused_tokens,
            context_tokens=self.context.usage,
            last_usage=self.responder.last_usage,
        )
        self.intake = Intake(
            self.live, store, backend, self.queue, self.responder, CommandRunner(commands)
        )
        self.retention = Retention(self.live, store, backend)

    # What the service and the tests may read and replace while the daemon runs.

    @property
    def settings(self) -> Settings:
        return self.live.settings

    @property
    def personas(self) -> PersonaSet:
        return self.live.personas

    @property
    def adapters(self) -> dict[str, Adapter]:
        return self.live.adapters

    @adapters.setter
    def adapters(self, adapters: dict[str, Adapter]) -> None:
        self.live.adapters = adapters

    @property
    def observer(self) -> Observer:
        return self.live.observer

    @observer.setter
    def observer(self, observer: Observer) -> None:
        self.live.observer = observer

    @property
    def in_flight(self) -> tuple[Generation, ...]:
        """The generations running now (health checks watch their progress)."""
        return self.responder.in_flight

    def is_admin(self, message: Incoming) -> bool:
        return self.live.is_admin(message)

    async def _fetch_quote(self, channel: str, message_id: str) -> Quoted | None:
        return await fetch_quote(self.live.adapters, self.store, channel, message_id)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.intake.restore_pending()
        await restore_auto_threads(self.store, self.adapters)
        self.responder.start()
        self.retention.start()
        for adapter in self.adapters.values():
            await adapter.start(self.intake.handle)
        log.info("started", adapters=sorted(self.adapters), model=self.backend.info.name)

    async def stop(self, grace: float | None = None) -> None:
        """Stop intake; let the answers in flight finish within `grace` seconds (default
        `[bot] shutdown_grace_s`), else stop them with a final notice (they stay pending, like
        every queued message, and are answered after the restart); then disconnect."""
        self.live.stopping = True
        self.retention.stop()
        await self.responder.finish(self.settings.bot.shutdown_grace_s if grace is None else grace)
        # Disconnect last: the answers just finished or stopped still had to be shown.
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await adapter.stop()
        log.info("stopped", answered=self.responder.answered, still_pending=len(self.queue))

    def abandon(self) -> None:
        """Stop the answers in flight now instead of waiting out the grace period."""
        self.responder.abandon()

    def reload(self, settings: Settings, personas: PersonaSet) -> None:
        """SIGHUP: personas, admins and the platform sections take effect now. The rest of
        `settings` (model, queue sizes, data_dir, ...) needs a restart and is left alone."""
        self.live.reload(settings, personas)

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            queued=len(self.queue),
            answering=self.responder.busy,
            slots=self.responder.slots,
            answered=self.responder.answered,
            stopping=self.live.stopping,
            adapters={name: is_connected(a) for name, a in sorted(self.adapters.items())},
            store_problem=self.store.problem,
            worker_failure=self.responder.failure(),
            engine=engine_stats(self.backend),
        )

    async def handle(self, event: ChatEvent) -> Outcome:
        """The sink every adapter feeds (bot.intake). Never raises."""
        return await self.intake.handle(event)

    async def purge_expired(self) -> int:
        """Delete history older than `[bot] retention_days` now (bot.retention)."""
        return await self.retention.purge_expired()

    async def wait_idle(self) -> None:
        """Until nothing is queued or being answered."""
        await self.responder.wait_idle()
