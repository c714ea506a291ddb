"""bot/model/memory.py: the memory this process may use, read from fake /proc and
/sys/fs/cgroup trees: cgroup v2 and v1, a systemd unit's MemoryMax=, containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.model.memory import available_memory, own_cgroups

MIB = 2**20
GIB = 2**30
V1_UNLIMITED = 9223372036854771712  # what v1 shows for "no limit"
MEMINFO = {"proc/meminfo": f"MemTotal: 16000000 kB\nMemAvailable: {8 * GIB // 1024} kB\n"}
SERVICE = "sys/fs/cgroup/system.slice/hearthbot.service"
V1_MEMORY = "sys/fs/cgroup/memory"


def v2_cgroup(folder: str, limit: int | str, current: int, file: int = 0) -> dict[str, str]:
    return {
        f"{folder}/memory.max": f"{limit}\n",
        f"{folder}/memory.current": f"{current}\n",
        f"{folder}/memory.stat": f"anon {current - file}\nfile {file}\n",
    }


def v1_cgroup(folder: str, limit: int, usage: int, cache: int = 0) -> dict[str, str]:
    return {
        f"{folder}/memory.limit_in_bytes": f"{limit}\n",
        f"{folder}/memory.usage_in_bytes": f"{usage}\n",
        f"{folder}/memory.stat": f"cache {cache}\nrss 1\ntotal_cache {cache}\n",
    }


CASES = {
    # A systemd unit's MemoryMax= is on its own cgroup, never the root (which has no limit);
    # page cache counts as available, as in MemAvailable.
    "v2 unit MemoryMax": (
        {
            **MEMINFO,
            "proc/self/cgroup": "0::/system.slice/hearthbot.service\n",
            **v2_cgroup("sys/fs/cgroup/system.slice", "max", GIB),
            **v2_cgroup(SERVICE, 2 * GIB, 512 * MIB, file=256 * MIB),
        },
        2 * GIB - 256 * MIB,
    ),
    "v2 slice tighter than the unit": (
        {
            **MEMINFO,
            "proc/self/cgroup": "0::/system.slice/hearthbot.service\n",
            **v2_cgroup("sys/fs/cgroup/system.slice", GIB, 900 * MIB),
            **v2_cgroup(SERVICE, 2 * GIB, 512 * MIB),
        },
        124 * MIB,
    ),
    "v2 no limit anywhere": (
        {
            **MEMINFO,
            "proc/self/cgroup": "0::/user.slice/session-1.scope\n",
            **v2_cgroup("sys/fs/cgroup/user.slice", "max", GIB),
            **v2_cgroup("sys/fs/cgroup/user.slice/session-1.scope", "max", GIB),
        },
        8 * GIB,
    ),
    "v2 container with its own cgroup namespace": (
        {**MEMINFO, "proc/self/cgroup": "0::/\n", **v2_cgroup("sys/fs/cgroup", GIB, 100 * MIB)},
        924 * MIB,
    ),
    # The development machine: v1 controllers, a memory cgroup of its own, an empty unified one.
    "v1 own memory cgroup": (
        {
            **MEMINFO,
            "proc/self/cgroup": "9:name=systemd:/\n4:memory:/process_api/b25b\n1:cpu:/\n0::/\n",
            **v1_cgroup(V1_MEMORY, V1_UNLIMITED, 5 * GIB),
            **v1_cgroup(f"{V1_MEMORY}/process_api", V1_UNLIMITED, 5 * GIB),
            **v1_cgroup(f"{V1_MEMORY}/process_api/b25b", 3 * GIB, GIB, cache=512 * MIB),
        },
        3 * GIB - 512 * MIB,
    ),
    "v1 unlimited": (
        {
            **MEMINFO,
            "proc/self/cgroup": "4:memory:/process_api/b25b\n0::/\n",
            **v1_cgroup(V1_MEMORY, V1_UNLIMITED, 5 * GIB),
            **v1_cgroup(f"{V1_MEMORY}/process_api/b25b", V1_UNLIMITED, GIB),
        },
        8 * GIB,
    ),
    "v1 controllers shared with cpu": (
        {
            **MEMINFO,
            "proc/self/cgroup": "3:cpu,memory:/system.slice/hearthbot.service\n",
            **v1_cgroup(f"{V1_MEMORY}/system.slice/hearthbot.service", GIB, 24 * MIB),
        },
        1000 * MIB,
    ),
    # Docker without a cgroup namespace: the path names the container on the host, the mount
    # shows the container's cgroup at its root.
    "v1 container path not on the mount": (
        {
            **MEMINFO,
            "proc/self/cgroup": "4:memory:/docker/0123abcd\n",
            **v1_cgroup(V1_MEMORY, GIB, 200 * MIB),
        },
        824 * MIB,
    ),
    "no /proc/self/cgroup: the root cgroup, as before": (
        {**MEMINFO, **v2_cgroup("sys/fs/cgroup", 2 * GIB, GIB)},
        GIB,
    ),
    "v2 unit, no meminfo": (
        {
            "proc/self/cgroup": "0::/system.slice/hearthbot.service\n",
            **v2_cgroup(SERVICE, 2 * GIB, GIB),
        },
        GIB,
    ),
    "nothing readable": ({}, None),
}


@pytest.mark.parametrize(("files", "expected"), list(CASES.values()), ids=list(CASES))
def test_available_memory(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert available_memory(tmp_path) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/system.slice/hearthbot.service\n", ("/system.slice/hearthbot.service", None)),
        ("4:memory:/a\n1:cpu:/b\n0::/c\n", ("/c", "/a")),
        ("3:cpu,memory:/a\n", (None, "/a")),
        ("2:cpuacct,cpu:/a\n", (None, None)),
        ("", (None, None)),
        (None, ("/", "/")),  # unreadable
    ],
)
def test_own_cgroups(text: str | None, expected: tuple[str | None, str | None]) -> None:
    assert own_cgroups(text) == expected


def test_this_machine_says_something() -> None:
    found = available_memory()
    assert found is not None and found > 0
