"""How much memory this process may still use: the machine's MemAvailable, capped by the
memory limit of the process's own cgroup and every cgroup above it (a systemd unit's
MemoryMax=, its slice's, a container's --memory), cgroup v2 or v1.

Everything is read under a root folder (`/` in use), so a table of fake /proc and
/sys/fs/cgroup trees tests it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True, slots=True)
class CgroupFiles:
    """Where one cgroup version keeps a cgroup's limit, usage and page cache."""

    mount: str  # under the root folder
    limit: str
    usage: str
    cache: str  # the memory.stat key of file-backed pages: reclaimable, as in MemAvailable


V2 = CgroupFiles("sys/fs/cgroup", "memory.max", "memory.current", "file")
V1 = CgroupFiles(
    "sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache"
)


def available_memory(root: Path = Path("/")) -> int | None:
    """Bytes this process may still use, or None when nothing says."""
    found = [] if (free := _mem_available(root)) is None else [free]
    v2, v1 = own_cgroups(_read(root / "proc/self/cgroup"))
    if v2 is not None:
        found += _headroom(root, V2, v2)
    if v1 is not None:
        found += _headroom(root, V1, v1)
    return min(found) if found else None


def own_cgroups(proc_self_cgroup: str | None) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in v1's memory hierarchy, from
    /proc/self/cgroup ("0::/system.slice/x.service", "4:memory:/docker/abc"). Unreadable:
    the root of both, as a container shows its own cgroup."""
    if proc_self_cgroup is None:
        return "/", "/"
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _headroom(root: Path, files: CgroupFiles, path: str) -> list[int]:
    """Limit minus usage (page cache not counted) of the cgroup at `path` and of each one above
    it, as far as the mount shows them: a container without its own cgroup namespace shows its
    cgroup at the mount's root, under a path that names it on the host."""
    parts = PurePosixPath(path).parts[1:]
    found = []
    for depth in range(len(parts), -1, -1):
        folder = root / files.mount / Path(*parts[:depth])
        limit, usage = _number(folder / files.limit), _number(folder / files.usage)
        if limit is None or usage is None:  # not shown here, or "max": no limit
            continue
        cache = _stat(_read(folder / "memory.stat"), files.cache)
        found.append(limit - max(0, usage - cache))
    return found


def _mem_available(root: Path) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _stat(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _number(path: Path) -> int | None:
    text = (_read(path) or "").strip()
    return int(text) if text.isdigit() else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
