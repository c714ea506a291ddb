"""Checks of what this machine must give the bot: a writable data directory, a free port."""

from __future__ import annotations

import errno
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bot.app.check.report import Check
from bot.private_files import private_dir
from bot.settings import Settings


def writable_dir(path: Path) -> Check:
    """The directory exists (or can be made, owner only, as a start makes it) and a file can
    be created in it."""
    if path.exists() and not path.is_dir():
        return Check("data_dir", False, f"{path} is not writable: not a directory")
    try:
        private_dir(path)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hearthbot-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Check("data_dir", False, f"{path} is not writable: {reason.lower()}")
    return Check("data_dir", True, f"{path} is writable")


def health_listen(settings: Settings) -> str:
    """`[health] listen`, if this build has that section (empty: the endpoint is off)."""
    return str(getattr(getattr(settings, "health", None), "listen", "") or "").strip()


def port_free(listen: str) -> Check:
    """Whether `host:port` ("[::1]:9470" for IPv6) can be bound now."""
    try:
        parts = urlsplit(f"//{listen}")
        host, port = parts.hostname or "127.0.0.1", parts.port
    except ValueError:
        port = None
    if port is None:
        return Check("health", False, f"{listen!r} is not host:port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As asyncio's servers do: a port held only by TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        busy = exc.errno == errno.EADDRINUSE
        hint = " (another program, or hearthbot already running?)" if busy else ""
        return Check("health", False, f"cannot listen on {listen}: {reason}{hint}")
    return Check("health", True, f"{listen} is free")
