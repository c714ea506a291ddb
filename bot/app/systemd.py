"""The systemd notify protocol (sd_notify(3)), spoken directly: one datagram of
newline-separated KEY=VALUE lines to the unix socket named in $NOTIFY_SOCKET.

Without $NOTIFY_SOCKET (a terminal, Docker, a test) every call is a cheap no-op, so callers
never need to ask whether they run under systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends state changes to the service manager. Never raises: a supervisor that went away
    must not take the bot down with it."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """`send(READY=1, STATUS="…")`; True when the datagram was delivered."""
        if self.address is None or not fields:
            return False
        # A value must stay on its one line: the protocol is line-based.
        lines = (f"{key}={value}".replace("\n", " ") for key, value in fields.items())
        text = "\n".join(lines)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("utf-8"), _sockaddr(self.address))
        except OSError as exc:
            if not self._warned:  # once: a watchdog ping every few seconds would flood the log
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """Ask for `seconds` more before the current start/stop timeout fires."""
        fields: dict[str, object] = {"EXTEND_TIMEOUT_USEC": int(seconds * 1_000_000)}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match this to the signal.
        return self.send(
            RELOADING=1,
            MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
            STATUS="Reloading personas and access lists",
        )

    def stopping(self, status: str = "Stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _sockaddr(address: str) -> str | bytes:
    # "@name" is a socket in the abstract namespace: a leading NUL byte on the wire.
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=, as sd_watchdog_enabled(3)
    advises), or None when the watchdog is off or meant for another process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
