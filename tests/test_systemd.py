"""The notify protocol against real unix datagram sockets, and the unit file checked by
systemd's own tools (`systemd-analyze verify` and `security`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app.systemd import Notifier, watchdog_interval
from bot.settings import BotSettings

# systemd-analyze.
pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "hearthbot.service"
INSTALLED_VENV = "/opt/hearthbot/venv"
MAX_EXPOSURE = 2.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must fit in 108 bytes; pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="hb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_over_a_path_socket(short_dir: Path) -> None:
    path = short_dir / "notify.sock"
    with receiver(str(path)) as sock:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        assert notifier.ready("Ready: one\ntwo")
        assert sock.recv(4096) == b"READY=1\nSTATUS=Ready: one two"  # a value stays one line
        assert notifier.extend_timeout(1.5, "Loading")
        assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000\nSTATUS=Loading"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.reloading()
        reloading = sock.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=Stopping"
        notifier.close()


def test_notify_over_an_abstract_socket() -> None:
    name = f"hearthbot-test-{os.getpid()}"
    with receiver(b"\0" + name.encode()) as sock:
        assert Notifier(f"@{name}").status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_a_socket_nothing_is_sent(short_dir: Path) -> None:
    assert not Notifier.from_env({}).ready("x")
    # A supervisor that went away is logged once, never raised.
    gone = Notifier(str(short_dir / "nobody.sock"))
    assert not gone.watchdog()
    assert not gone.watchdog()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env) == interval


# -- the unit file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None and os.geteuid() == 0:  # `make test` installs it; a bare pytest may not
        for step in (["update"], ["install", "-y", "--no-install-recommends", "systemd"]):
            subprocess.run(
                ["apt-get", "-qq", *step],
                env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
                stdout=subprocess.DEVNULL,
                check=True,
            )
        found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (make system-tools installs it)")
        pytest.skip("systemd-analyze is missing and cannot be installed without root")
    return found


def unit_lines() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit with the install path pointing at this venv (so ExecStart exists) and the
    credential examples switched on (so their syntax is verified too)."""
    venv = Path(sys.prefix)
    assert (venv / "bin" / "hearthbot").exists()
    text = UNIT.read_text().replace(INSTALLED_VENV, str(venv))
    text = re.sub(r"^#(LoadCredential=)", r"\1", text, flags=re.MULTILINE)
    assert "LoadCredential=" in text.replace("#LoadCredential", "")
    unit = tmp_path / "hearthbot.service"
    unit.write_text(text)
    return unit


def test_unit_verifies_clean(systemd_analyze: str, installed_unit: Path) -> None:
    result = subprocess.run(
        [systemd_analyze, "verify", str(installed_unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_unit_verify_catches_a_missing_program(systemd_analyze: str, tmp_path: Path) -> None:
    # The real install path does not exist here: verify must say so (the test above can fail).
    unit = tmp_path / "hearthbot.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode != 0 and INSTALLED_VENV in result.stderr


def test_unit_exposure_is_low_with_the_network_allowed(
    systemd_analyze: str, installed_unit: Path
) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(installed_unit)],
        capture_output=True,
        text=True,
        cwd=installed_unit.parent,
    )
    assert result.returncode == 0, result.stderr
    level = re.search(r"Overall exposure level for hearthbot\.service: ([\d.]+)", result.stdout)
    assert level is not None, result.stdout
    assert float(level.group(1)) <= MAX_EXPOSURE, result.stdout
    lines = unit_lines()
    assert "PrivateNetwork" not in lines and "IPAddressDeny" not in lines
    families = lines["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)  # AF_UNIX: the notify socket


def test_unit_service_settings() -> None:
    lines = unit_lines()
    single = {key: values[-1] for key, values in lines.items()}
    assert single["Type"] == "notify" and single["Restart"] == "on-failure"
    assert single["DynamicUser"] == "yes" and single["StateDirectory"] == "hearthbot"
    assert single["ExecStart"].startswith(f"{INSTALLED_VENV}/bin/hearthbot ")
    assert single["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(single["WatchdogSec"].removesuffix("s")) >= 10
    # systemd must not kill us while the answer in flight still has its grace period.
    grace = BotSettings.model_fields["shutdown_grace_s"].default
    assert int(single["TimeoutStopSec"].removesuffix("s")) >= grace + 10
    for option in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert option in single
    assert single["CapabilityBoundingSet"] == ""
    assert single["MemoryDenyWriteExecute"] == "yes"
    assert "@system-service" in lines["SystemCallFilter"]


# -- the GPU drop-in --------------------------------------------------------------------------

GPU_DROP_IN = ROOT / "systemd" / "hearthbot.service.d" / "gpu.conf"
# Measured: 1.1 without the drop-in (the README says so), 1.5 with it.
MAX_GPU_EXPOSURE = 2.0


def exposure(systemd_analyze: str, unit: Path) -> tuple[float, str]:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
    )
    assert result.returncode == 0, result.stderr
    level = re.search(r"Overall exposure level for hearthbot\.service: ([\d.]+)", result.stdout)
    assert level is not None, result.stdout
    return float(level.group(1)), result.stdout


@pytest.fixture
def with_gpu_drop_in(installed_unit: Path) -> Path:
    """The unit with the drop-in applied: its [Service] section read after the unit's, as
    systemd reads a drop-in (a later assignment wins; DeviceAllow= adds)."""
    unit = installed_unit.parent / "gpu" / "hearthbot.service"
    unit.parent.mkdir()
    unit.write_text(installed_unit.read_text() + "\n" + GPU_DROP_IN.read_text())
    return unit


def drop_in_lines() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in GPU_DROP_IN.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_gpu_drop_in_verifies_and_reports_both_exposures(
    systemd_analyze: str, installed_unit: Path, with_gpu_drop_in: Path
) -> None:
    result = subprocess.run(
        [systemd_analyze, "verify", str(with_gpu_drop_in)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    base, base_table = exposure(systemd_analyze, installed_unit)
    gpu, table = exposure(systemd_analyze, with_gpu_drop_in)
    print(f"exposure: {base} without the GPU drop-in, {gpu} with it")
    assert base <= MAX_EXPOSURE and base < gpu <= MAX_GPU_EXPOSURE, table
    # What the drop-in opened, and only that, in systemd's own words.
    opened = failed_settings(table) - failed_settings(base_table)
    assert opened == {
        "PrivateDevices=",
        "PrivateUsers=",
        "MemoryDenyWriteExecute=",
        "SupplementaryGroups=",
    }, table  # DeviceAllow= is marked in both (ProtectClock= allows the clock); see below


def failed_settings(table: str) -> set[str]:
    """The settings systemd-analyze security marks ✗."""
    return {line.split()[1] for line in table.splitlines() if line.startswith("✗")}


def test_the_gpu_drop_in_opens_the_gpus_only() -> None:
    lines = drop_in_lines()
    assert lines["PrivateDevices"] == ["no"] and lines["PrivateUsers"] == ["no"]
    assert lines["MemoryDenyWriteExecute"] == ["no"]
    allowed = [value.split()[0] for value in lines["DeviceAllow"]]
    assert allowed == [
        "char-nvidia-frontend",
        "char-nvidia-uvm",
        "char-nvidia-caps",
        "char-drm",
        "char-kfd",
    ]
    # The closed device policy, the network rules and the system call filter stay the unit's.
    for kept in ("DevicePolicy", "RestrictAddressFamilies", "SystemCallFilter", "DynamicUser"):
        assert kept not in lines
    assert unit_lines()["DevicePolicy"] == ["closed"]
