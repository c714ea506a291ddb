"""/healthz, /readyz and /metrics over HTTP (aiohttp), on `[health] listen`.

- /healthz is liveness: the event loop answers (this handler runs on it), the answer worker
  runs, and the model worker answers a trivial job, or, busy with a long reply, keeps
  producing tokens. A store that cannot be written is 200 "degraded: store (...)": the bot
  lives and answers once it can save again; restarting it would not help.
- /readyz is 200 when every adapter is connected and the store can be written, else 503
  saying what is not.
- /metrics is the Prometheus text format (bot.app.metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.app.liveness import WorkerProbe
from bot.settings import HealthSettings
from bot.status import DaemonStatus

if TYPE_CHECKING:
    from bot.app.metrics import Metrics

log = structlog.get_logger(__name__)

# /healthz waits this long for the worker before judging by progress instead: well inside
# the timeouts of Docker's HEALTHCHECK and of Kubernetes' probes.
HEALTHZ_WAIT_S = 2.0


class HealthError(Exception):
    """The health endpoint cannot be served (e.g. the port is taken); worded for the user."""


class HealthServer:
    """Serves /healthz, /readyz and /metrics for one daemon, read from its status snapshot."""

    def __init__(
        self,
        listen: str,
        status: Callable[[], DaemonStatus],
        probe: WorkerProbe,
        metrics: Metrics | None,
    ) -> None:
        self.host, self._port = HealthSettings.split_listen(listen)
        self.status = status
        self.probe = probe
        self.metrics = metrics
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when `listen` asked for port 0)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        # No access log: a scrape every few seconds would drown everything else.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError as exc:
            await runner.cleanup()
            raise HealthError(
                f"health: cannot listen on {self.host}:{self._port}: {exc.strerror or exc} "
                "(set [health] listen to another port, or to an empty value to turn it off)"
            ) from None
        self._runner = runner
        log.info("health endpoints up", host=self.host, port=self.port)

    async def close(self) -> None:
        self.probe.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        problem = await self.probe.check(wait=HEALTHZ_WAIT_S)
        if problem is not None:
            return web.Response(status=503, text=f"unhealthy: {problem}\n")
        if degraded := self.status().degraded:
            return web.Response(text=f"{degraded}\n")
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        status = self.status()
        if status.stopping:
            return web.Response(status=503, text="not ready: shutting down\n")
        if status.worker_failure is not None:
            return web.Response(status=503, text=f"not ready: {status.worker_failure}\n")
        if degraded := status.degraded:
            return web.Response(status=503, text=f"not ready: {degraded}\n")
        if down := status.disconnected:
            return web.Response(status=503, text=f"not ready: {', '.join(down)} not connected\n")
        return web.Response(text=f"ready: {', '.join(status.adapters)}\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = self.metrics.exposition() if self.metrics is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
