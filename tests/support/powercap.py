"""A fake powercap tree and /proc/stat in a directory: what the energy reader is pointed at in
tests, with package counters that advance and wrap as the kernel's do."""

from __future__ import annotations

from pathlib import Path


class FakePowercap:
    """`root/intel-rapl:N` package zones (with a subzone each, never counted) and
    `proc/stat`, written by the test."""

    def __init__(self, base: Path, packages: int = 1, max_range_uj: int = 10_000_000) -> None:
        self.root = base / "powercap"
        self.proc = base / "proc"
        self.proc.mkdir(parents=True)
        self.max_range_uj = max_range_uj
        self.counters = [0] * packages
        for n in range(packages):
            zone = self.root / f"intel-rapl:{n}"
            (zone / f"intel-rapl:{n}:0").mkdir(parents=True)
            (zone / "name").write_text(f"package-{n}\n")
            (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
            sub = zone / f"intel-rapl:{n}:0"
            (sub / "energy_uj").write_text("0\n")
            (sub / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        self.busy_ticks = 0
        self.idle_ticks = 0
        self._write()

    def advance(self, uj: int, busy_ticks: int = 0, idle_ticks: int = 0, package: int = 0) -> None:
        """The package used `uj` microjoules (its counter wraps past max_range_uj), and the
        box's CPUs were busy and idle for these ticks."""
        self.counters[package] = (self.counters[package] + uj) % self.max_range_uj
        self.busy_ticks += busy_ticks
        self.idle_ticks += idle_ticks
        self._write()

    def _write(self) -> None:
        for n, value in enumerate(self.counters):
            (self.root / f"intel-rapl:{n}" / "energy_uj").write_text(f"{value}\n")
        # user nice system idle iowait irq softirq steal: busy split over user and system.
        user, system = self.busy_ticks // 2, self.busy_ticks - self.busy_ticks // 2
        (self.proc / "stat").write_text(
            f"cpu  {user} 0 {system} {self.idle_ticks} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"
        )
