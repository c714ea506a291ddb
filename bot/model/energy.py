"""Where a reply's energy figure comes from: the best source the box has, and how much of it
is hearthbot's.

Three sources, best first. A GPU's own energy counter through NVML, when the model runs on a
GPU (nvidia-ml-py, imported only then). The CPU package's counters (Linux powercap/RAPL
`energy_uj`, which wraps at `max_energy_range_uj`): they count every process on the box, so
hearthbot is given the share of the box's busy CPU time that was its own over the interval.
Else an estimate: hearthbot's CPU time × `[footprint] watts_per_core`, always marked
"estimated". hearthbot's CPU time is its process's: the model thread and llama.cpp's worker
threads (which a thread clock of the model thread alone would miss) do nearly all of it while
replies are generated. The powercap and /proc roots are parameters, so tests read a fake tree.
Nothing here imports llama_cpp; the arithmetic is plain functions (table-tested).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

POWERCAP_ROOT = Path("/sys/class/powercap")
PROC_ROOT = Path("/proc")

K = TypeVar("K")


def counter_delta(before: int, after: int, max_range: int) -> int:
    """How far a counter that wraps to 0 after `max_range` advanced from `before` to `after`
    (at most one wrap between two reads: RAPL's range is minutes at full power, at least)."""
    if after >= before:
        return after - before
    return max_range - before + after


def attributed(box_joules: float, own_cpu_s: float, box_cpu_s: float) -> float:
    """hearthbot's part of what the whole box used: by its share of the busy CPU time."""
    if own_cpu_s <= 0 or box_joules <= 0:
        return 0.0
    share = 1.0 if box_cpu_s <= own_cpu_s else own_cpu_s / box_cpu_s
    return box_joules * share


def split_by_tokens(amount: float, tokens: Mapping[K, int]) -> dict[K, float]:
    """A step's energy (or time) shared by its replies, each by its share of the step's tokens
    (prompt tokens evaluated plus tokens drawn)."""
    total = sum(tokens.values())
    if total <= 0:
        return dict.fromkeys(tokens, 0.0)
    return {key: amount * count / total for key, count in tokens.items()}


def box_busy_cpu_s(proc_root: Path = PROC_ROOT) -> float:
    """CPU time the whole box spent busy since boot, all cores (from /proc/stat's first line:
    everything but idle and iowait)."""
    with open(proc_root / "stat", encoding="ascii") as f:
        fields = f.readline().split()
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


class Source(Protocol):
    """An energy source: joules hearthbot used between two marks."""

    name: str  # "rapl", "nvml" or "estimated"

    @property
    def measured(self) -> bool: ...

    def mark(self) -> object:
        """A reading to measure from (opaque)."""
        ...

    def joules_since(self, mark: object) -> float:
        """hearthbot's joules since `mark` (its process CPU time included in the reading)."""
        ...


class Estimate:
    """No counter: the process's CPU time × watts per busy core."""

    name = "estimated"
    measured = False

    def __init__(self, watts_per_core: float, cpu_clock: Callable[[], float] = time.process_time):
        self.watts_per_core = watts_per_core
        self._cpu = cpu_clock

    def mark(self) -> object:
        return self._cpu()

    def joules_since(self, mark: object) -> float:
        assert isinstance(mark, float)
        return max(0.0, self._cpu() - mark) * self.watts_per_core


@dataclass(frozen=True, slots=True)
class Zone:
    """One CPU package's powercap zone: its counter and where that counter wraps."""

    path: Path
    max_range_uj: int


def package_zones(root: Path = POWERCAP_ROOT) -> list[Zone]:
    """The top-level RAPL zones (one per CPU package; their subzones are parts of them).
    Raises OSError (PermissionError when energy_uj is root-only) or ValueError (no zones)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist (no powercap in this kernel or VM)")
    zones = []
    for path in sorted(root.glob("intel-rapl:*")):
        if path.name.count(":") != 1:
            continue  # a subzone (core, uncore, dram) of a package already counted
        zone = Zone(path, int((path / "max_energy_range_uj").read_text()))
        int((path / "energy_uj").read_text())  # readable? (root-only on most hosts)
        zones.append(zone)
    if not zones:
        raise ValueError(f"{root} has no RAPL package zone (intel-rapl:N)")
    return zones


@dataclass(frozen=True, slots=True)
class RaplMark:
    """The package counters, hearthbot's CPU time and the box's busy CPU time at one moment."""

    counters: list[int]
    own_cpu_s: float
    box_cpu_s: float


class Rapl:
    """The CPU packages' powercap counters, shared out by CPU time (see `attributed`)."""

    name = "rapl"
    measured = True

    def __init__(
        self,
        zones: list[Zone],
        proc_root: Path = PROC_ROOT,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.zones = zones
        self._proc_root = proc_root
        self._cpu = cpu_clock

    def mark(self) -> RaplMark:
        counters = [int((z.path / "energy_uj").read_text()) for z in self.zones]
        return RaplMark(counters, self._cpu(), box_busy_cpu_s(self._proc_root))

    def joules_since(self, mark: object) -> float:
        assert isinstance(mark, RaplMark)
        now = self.mark()
        uj = sum(
            counter_delta(before, after, zone.max_range_uj)
            for before, after, zone in zip(mark.counters, now.counters, self.zones, strict=True)
        )
        return attributed(uj / 1e6, now.own_cpu_s - mark.own_cpu_s, now.box_cpu_s - mark.box_cpu_s)


class Nvml:
    """A GPU's own energy counter (millijoules since the driver loaded). The model runs
    there: the GPU's energy over the interval is hearthbot's (the host CPU's is not added)."""

    name = "nvml"
    measured = True

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle

    @classmethod
    def open(cls, index: int = 0) -> Nvml:
        """The counter of GPU `index`. Raises ImportError (nvidia-ml-py not installed) or
        the library's error (no driver, a GPU without the counter)."""
        # Optional: only a box that runs the model on a GPU needs nvidia-ml-py.
        pynvml = importlib.import_module("pynvml")
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # supported? (Volta and newer)
        return cls(pynvml, handle)

    def mark(self) -> object:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def joules_since(self, mark: object) -> float:
        assert isinstance(mark, int)
        now = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        return max(0, now - mark) / 1000


@dataclass(frozen=True, slots=True)
class Choice:
    """The source in use, and why (what `hearthbot check` says)."""

    source: Source
    why: str


def choose_source(
    watts_per_core: float,
    on_gpu: bool = False,
    powercap_root: Path = POWERCAP_ROOT,
    proc_root: Path = PROC_ROOT,
    open_nvml: Callable[[], Source] = Nvml.open,
) -> Choice:
    """The best energy source this box offers, and why the better ones are not used."""
    reasons = []
    if on_gpu:
        try:
            return Choice(open_nvml(), "the model runs on a GPU: its NVML energy counter")
        except ImportError:
            reasons.append("the model runs on a GPU but nvidia-ml-py is not installed")
        except Exception as exc:
            reasons.append(f"the GPU's NVML energy counter is unavailable ({exc})")
    try:
        zones = package_zones(powercap_root)
        box_busy_cpu_s(proc_root)
    except PermissionError as exc:
        reasons.append(f"{exc.filename} is readable by root only (see docs/footprint.md)")
    except (OSError, ValueError) as exc:
        reasons.append(str(exc))
    else:
        names = ", ".join(z.path.name for z in zones)
        why = f"CPU package counters ({names}), shared by hearthbot's part of the CPU time"
        return Choice(Rapl(zones, proc_root), why)
    estimate = Estimate(watts_per_core)
    reasons.append(f"estimated from CPU time × {watts_per_core:g} W per busy core")
    return Choice(estimate, "; ".join(reasons))
