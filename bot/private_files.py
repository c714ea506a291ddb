"""Files and folders only their owner may read, whatever the umask: the data directory and the
history database hold what people wrote to the bot."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

# The group's and others' bits: what "private" takes away.
SHARED_BITS = 0o077


def private_dir(path: Path) -> Path:
    """Create `path` (parents as usual) as 0700. An existing one loses its group and other
    bits: an older hearthbot, a Dockerfile's mkdir or `make run` under umask 022 made it 0755."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        make_private(path)
    else:
        path.chmod(0o700)  # the umask may have taken bits the owner needs
    return path


def private_file(path: Path) -> Path:
    """Create an empty `path` as 0600, or take the group and other bits from an existing one.
    SQLite gives its -wal and -shm files the database file's mode, so this comes first."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        make_private(path)
    else:
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    return path


def make_private(path: Path) -> None:
    """Take the group and other bits from an existing file or folder (missing: nothing to do;
    someone else's: left as it is, since only its owner may change it)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & SHARED_BITS:
            path.chmod(mode & ~SHARED_BITS)
