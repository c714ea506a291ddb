"""The daemon as a service: what it tells its supervisor (systemd's notify protocol), how it
reacts to signals, and the health endpoints.

- While the model loads: STATUS= lines, and EXTEND_TIMEOUT_USEC so that a large model does
  not trip TimeoutStartSec= (the extension stops when the event loop does).
- READY=1 once the model is loaded and the adapters are started, not connected: a chat
  platform that is down at boot must not turn into a restart loop.
- WATCHDOG=1 from the event loop while the answer worker runs and the model worker is alive
  (bot.app.liveness.WorkerProbe), so a hung loop, a stalled model worker or an answer worker
  that is gone gets the process restarted. A full disk or a platform that is down does not:
  a restart would fix neither (STATUS= says them).
- SIGTERM/SIGINT: graceful stop (Daemon.stop); a second one stops the answer in flight now.
  STOPPING=1 as the stop begins.
- SIGHUP: personas and access lists are reloaded without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic import BaseModel

from adapters.common.tasks import BackgroundTasks
from bot import logs
from bot.app.liveness import WorkerProbe, worker_ping
from bot.app.systemd import Notifier, watchdog_interval
from bot.personas import PersonaError, PersonaSet
from bot.settings import (
    LIVE_BOT_SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    secret_values,
)

if TYPE_CHECKING:
    from bot.app.health import HealthServer
    from bot.daemon import Daemon

log = structlog.get_logger(__name__)

# While loading: ask for this much more time, this often. A loop that stops turning stops
# asking, and systemd's timeout then fires as it should.
LOAD_EXTEND_S = 30.0
LOAD_STEP_S = 10.0
# STATUS= is refreshed this often (only sent when it changed).
STATUS_EVERY_S = 5.0


class Service:
    """The daemon under a supervisor: what systemd is told, signals, reload, health."""

    def __init__(
        self,
        settings: Settings,
        config_file: Path | None,
        load_personas: Callable[[Settings], PersonaSet],
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self._load_personas = load_personas
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.daemon: Daemon | None = None
        self.health: HealthServer | None = None
        self.probe: WorkerProbe | None = None
        self._tasks = BackgroundTasks("service")
        self._reloading: asyncio.Task[bool] | None = None
        self._shown = ""  # the STATUS= line systemd has
        self._withheld = False  # the watchdog ping is being withheld

    # -- startup ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def loading(self, what: str) -> AsyncIterator[None]:
        """Around loading the model: tell systemd what is happening and that it takes time."""
        status = f"Loading {what}"
        self.notifier.extend_timeout(LOAD_EXTEND_S, status)
        # SIGHUP would end the process by default; a reload makes no sense before loading.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, log.info, "SIGHUP while loading: ignored")
        task = asyncio.create_task(self._keep_extending(status), name="hearthbot-loading")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_extending(self, status: str) -> None:
        started = time.monotonic()
        watchdog = watchdog_interval()
        step = min(LOAD_STEP_S, watchdog) if watchdog else LOAD_STEP_S
        while True:
            await asyncio.sleep(step)
            elapsed = time.monotonic() - started
            self.notifier.extend_timeout(LOAD_EXTEND_S, f"{status} ({elapsed:.0f} s)")
            if watchdog:
                self.notifier.watchdog()

    async def attach(self, daemon: Daemon, serve_health: bool) -> None:
        """Before the daemon starts: metrics (so restored messages count too) and the health
        endpoints. A port that is taken is logged, not fatal: the chat is what matters, and a
        restart loop over a metrics port would help nobody (`hearthbot check` reports it)."""
        self.daemon = daemon
        self.probe = WorkerProbe(
            worker_ping(daemon.backend),
            lambda: daemon.in_flight,
            self.settings.health.stall_s,
            failure=lambda: daemon.status().worker_failure,
        )
        if not (serve_health and self.settings.health.listen):
            return
        from bot.app.health import HealthError, HealthServer  # aiohttp: only when serving
        from bot.app.metrics import Metrics

        metrics = Metrics(daemon.status)
        daemon.observer = metrics
        health = HealthServer(self.settings.health.listen, daemon.status, self.probe, metrics)
        try:
            await health.start()
        except HealthError as exc:
            log.error("health endpoints off", error=str(exc))
            return
        self.health = health

    def ready(self) -> None:
        """The model is loaded and the adapters are started."""
        self._shown = self.status_text()
        self.notifier.ready(self._shown)
        if self.notifier.enabled:
            self._tasks.spawn(self._heartbeat(watchdog_interval()), "hearthbot-heartbeat")

    def status_text(self) -> str:
        if self.daemon is None:
            return "Starting"
        status = self.daemon.status()
        adapters = ", ".join(
            f"{name}{'' if connected else ' (connecting)'}"
            for name, connected in status.adapters.items()
        )
        busy = "answering" if status.answering else "idle"
        text = f"Ready, {busy}: {status.answered} answered, {status.queued} queued; {adapters}"
        for problem in (status.degraded, status.worker_failure):
            if problem is not None:
                text += f"; {problem}"
        return text

    async def _heartbeat(self, watchdog: float | None) -> None:
        step = min(watchdog, STATUS_EVERY_S) if watchdog else STATUS_EVERY_S
        while True:
            await self.beat(watchdog=watchdog is not None)
            await asyncio.sleep(step)

    async def beat(self, watchdog: bool) -> None:
        """One heartbeat: WATCHDOG=1 (when systemd watches) unless the probe finds a worker
        gone or stuck, and STATUS= when it changed."""
        if watchdog and self.probe is not None:
            problem = await self.probe.check()
            if problem is None:
                self.notifier.watchdog()
            elif not self._withheld:  # withheld pings make systemd restart us
                log.error("withholding the watchdog ping", problem=problem)
            self._withheld = problem is not None
        if (status := self.status_text()) != self._shown:
            self.notifier.status(status)
            self._shown = status

    # -- signals ------------------------------------------------------------------------------

    def handle_signals(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _on_stop_signal(self, stop: asyncio.Event) -> None:
        if stop.is_set() and self.daemon is not None:
            log.info("second stop signal: stopping the answer in flight now")
            self.daemon.abandon()
        stop.set()

    def _on_hangup(self) -> None:
        if self.daemon is None or self.daemon.status().stopping:
            return
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self.reload(), name="hearthbot-reload")

    async def reload(self) -> bool:
        """Re-read the config and personas; apply personas and access lists. A broken file
        changes nothing (the error is logged) and the bot carries on."""
        daemon = self.daemon
        assert daemon is not None
        self.notifier.reloading()
        try:
            settings = load_settings(self.config_file)
            personas = self._load_personas(settings)
        except (ConfigError, PersonaError) as exc:
            log.error("reload failed; nothing changed", error=str(exc))
            daemon.observer.error("reload")
            self.notifier.ready(self.status_text())
            return False
        for secret in secret_values(settings):
            logs.register_secret(secret)
        daemon.reload(settings, personas)
        updated = []
        for name, adapter in daemon.adapters.items():
            hook = getattr(adapter, "update_settings", None)
            section = getattr(settings, name, None)
            if callable(hook) and isinstance(section, BaseModel):
                try:
                    if inspect.isawaitable(outcome := hook(section, daemon.settings.bot)):
                        await outcome
                    updated.append(name)
                except Exception:
                    log.exception("an adapter could not take the new settings", adapter=name)
        needs_restart = changed_fields(self.settings, settings, skip=set(updated))
        self.settings = settings
        log.info(
            "reloaded",
            personas=personas.names(),
            adapters_updated=updated,
            needs_restart=needs_restart,
        )
        self.notifier.ready(self.status_text())
        return True

    # -- shutdown -----------------------------------------------------------------------------

    def stopping(self) -> None:
        busy = self.daemon is not None and self.daemon.status().answering
        self.notifier.stopping("Stopping: finishing the answer in flight" if busy else "Stopping")

    async def close(self) -> None:
        await self._tasks.stop()
        if self._reloading is not None and not self._reloading.done():
            self._reloading.cancel()
        if self.health is not None:
            await self.health.close()
        elif self.probe is not None:
            self.probe.close()
        self.notifier.close()


def changed_fields(old: Settings, new: Settings, skip: set[str]) -> list[str]:
    """Settings that differ but only take effect after a restart ("queue.max_pending")."""
    changed = []
    for section in type(old).model_fields:
        if section in skip:
            continue
        before, after = getattr(old, section), getattr(new, section)
        for key in type(before).model_fields:
            if section == "bot" and key in LIVE_BOT_SETTINGS:
                continue
            if getattr(before, key) != getattr(after, key):
                changed.append(f"{section}.{key}")
    return changed
