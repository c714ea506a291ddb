"""Where a reply's energy comes from (bot.model.energy) and how it is shared out
(bot.model.footprint): the arithmetic by tables, the readers on a fake powercap tree whose
counters advance and wrap, and the accountant over concurrent replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.model.energy import (
    Estimate,
    Nvml,
    Rapl,
    attributed,
    box_busy_cpu_s,
    choose_source,
    counter_delta,
    package_zones,
    split_by_tokens,
)
from bot.model.footprint import Accountant, split_by_cpu
from support.powercap import FakePowercap

TICK = 0.01  # USER_HZ is 100 on Linux


@pytest.mark.parametrize(
    ("before", "after", "max_range", "delta"),
    [
        (100, 350, 1000, 250),
        (0, 0, 1000, 0),
        (900, 100, 1000, 200),  # wrapped once
        (999, 0, 1000, 1),
        (262_143_328_850, 1_000_000, 262_143_328_850, 1_000_000),  # a real Intel range
    ],
)
def test_counter_delta(before: int, after: int, max_range: int, delta: int) -> None:
    assert counter_delta(before, after, max_range) == delta


@pytest.mark.parametrize(
    ("box_joules", "own_cpu_s", "box_cpu_s", "ours"),
    [
        (100.0, 1.0, 4.0, 25.0),  # a quarter of the box's busy time
        (100.0, 2.0, 2.0, 100.0),
        (100.0, 3.0, 2.0, 100.0),  # the box's coarse ticks lag behind: never more than all
        (100.0, 1.0, 0.0, 100.0),
        (100.0, 0.0, 4.0, 0.0),  # hearthbot did nothing
        (0.0, 1.0, 4.0, 0.0),
    ],
)
def test_attributed(box_joules: float, own_cpu_s: float, box_cpu_s: float, ours: float) -> None:
    assert attributed(box_joules, own_cpu_s, box_cpu_s) == pytest.approx(ours)


@pytest.mark.parametrize(
    ("amount", "tokens", "shares"),
    [
        (10.0, {"a": 1, "b": 1}, {"a": 5.0, "b": 5.0}),
        # a reply evaluating 510 prompt tokens and two each drawing one
        (5.12, {"p": 510, "x": 1, "y": 1}, {"p": 5.1, "x": 0.01, "y": 0.01}),
        (3.0, {"a": 3}, {"a": 3.0}),
        (3.0, {"a": 0}, {"a": 0.0}),
        (3.0, {}, {}),
    ],
)
def test_split_by_tokens(amount: float, tokens: dict[str, int], shares: dict[str, float]) -> None:
    result = split_by_tokens(amount, tokens)
    assert result == pytest.approx(shares)
    if sum(tokens.values()):
        assert sum(result.values()) == pytest.approx(amount)


def test_package_zones_skip_subzones(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path, packages=2)
    zones = package_zones(tree.root)
    assert [z.path.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]
    assert all(z.max_range_uj == tree.max_range_uj for z in zones)


def test_rapl_counts_advances_and_wraps_and_shares_by_cpu_time(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path, packages=2, max_range_uj=10_000_000)
    own = [0.0]
    rapl = Rapl(package_zones(tree.root), tree.proc, cpu_clock=lambda: own[0])
    tree.advance(9_000_000, package=1)
    mark = rapl.mark()
    # 3 J on package 0, and 2 J on package 1 whose counter wraps past 10 J.
    tree.advance(3_000_000, busy_ticks=400, package=0)
    tree.advance(2_000_000, package=1)
    own[0] += 1.0  # hearthbot: 1 s of the box's 4 s busy
    assert tree.counters[1] == 1_000_000
    assert rapl.joules_since(mark) == pytest.approx(5.0 * 1.0 / (400 * TICK))
    # Alone on the box: all of it.
    mark = rapl.mark()
    tree.advance(7_000_000, busy_ticks=100)
    own[0] += 1.0
    assert rapl.joules_since(mark) == pytest.approx(7.0)


def test_box_busy_cpu_leaves_out_idle_and_iowait(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 20 30 5000 700 4 6 40 0 0\n")
    assert box_busy_cpu_s(tmp_path) == pytest.approx((100 + 20 + 30 + 4 + 6 + 40) * TICK)


def test_estimate_is_cpu_time_times_watts_per_core() -> None:
    cpu = [10.0]
    estimate = Estimate(8.0, cpu_clock=lambda: cpu[0])
    mark = estimate.mark()
    cpu[0] += 2.5  # e.g. two cores for 1.25 s
    assert estimate.joules_since(mark) == pytest.approx(20.0)
    assert not estimate.measured and estimate.name == "estimated"


class FakeNvmlLibrary:
    """nvidia-ml-py's calls that Nvml makes, on a counter the test advances (millijoules)."""

    def __init__(self) -> None:
        self.millijoules = 5_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        assert handle == "gpu0"
        return self.millijoules


def test_nvml_counter_in_millijoules() -> None:
    library = FakeNvmlLibrary()
    nvml = Nvml(library, "gpu0")
    mark = nvml.mark()
    library.millijoules += 12_500
    assert nvml.joules_since(mark) == pytest.approx(12.5)


def _unavailable() -> Nvml:
    raise ImportError("No module named 'pynvml'")


def test_choose_source(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    missing = tmp_path / "nothing"
    cases = [
        # (on_gpu, powercap root, NVML opener) → source, words in the reason
        (False, tree.root, _unavailable, "rapl", "intel-rapl:0"),
        (False, missing, _unavailable, "estimated", "does not exist"),
        (True, missing, _unavailable, "estimated", "nvidia-ml-py is not installed"),
        (True, tree.root, _unavailable, "rapl", "intel-rapl:0"),
        (True, missing, lambda: Nvml(FakeNvmlLibrary(), "gpu0"), "nvml", "GPU"),
    ]
    for on_gpu, root, opener, source, words in cases:
        choice = choose_source(8.0, on_gpu, root, tree.proc, opener)
        assert choice.source.name == source, (on_gpu, root)
        assert words in choice.why
        assert choice.source.measured == (source != "estimated")
    empty = tmp_path / "empty"
    empty.mkdir()
    choice = choose_source(8.0, False, empty, tree.proc)
    assert choice.source.name == "estimated" and "no RAPL package zone" in choice.why
    assert "8 W per busy core" in choice.why


class CountedSource:
    """A source whose joules the test sets for each window."""

    name = "rapl"
    measured = True

    def __init__(self) -> None:
        self.joules = 0.0
        self.windows = 0

    def mark(self) -> object:
        return None

    def joules_since(self, mark: object) -> float:
        self.windows += 1
        used, self.joules = self.joules, 0.0
        return used


def test_concurrent_replies_share_steps_by_tokens_and_windows_by_cpu() -> None:
    source = CountedSource()
    now = [0.0]
    accountant = Accountant(source, window_s=1.0, clock=lambda: now[0])
    # Step 1: A evaluates 90 prompt tokens while B draws 10 (0.2 s CPU, 0.1 s wall).
    accountant.before_step()
    accountant.step({"A": 90, "B": 10}, cpu_s=0.2, wall_s=0.1)
    # Step 2: both draw one token.
    now[0] = 0.5
    accountant.step({"A": 1, "B": 1}, cpu_s=0.1, wall_s=0.05)
    source.joules = 30.0  # the window's joules: CPU given is A 0.23, B 0.07
    now[0] = 1.0
    accountant.step({"A": 1, "B": 1}, cpu_s=0.0, wall_s=0.0)  # closes the window
    assert source.windows == 1
    b = accountant.finish("B")  # nothing pending: no window closed for it
    assert source.windows == 1
    assert b.joules == pytest.approx(30.0 * 0.07 / 0.3)
    assert b.model_s == pytest.approx(0.01 + 0.025)
    # A goes on alone; its end closes its open window.
    accountant.step({"A": 1}, cpu_s=0.1, wall_s=0.1)
    source.joules = 4.0
    a = accountant.finish("A")
    assert a.joules == pytest.approx(30.0 * 0.23 / 0.3 + 4.0)
    assert a.cpu_s == pytest.approx(0.18 + 0.05 + 0.1)
    assert accountant.total_joules == pytest.approx(34.0)
    assert a.joules + b.joules == pytest.approx(accountant.total_joules)


def test_a_source_that_fails_gives_no_energy_and_no_error() -> None:
    class Broken(CountedSource):
        def mark(self) -> object:
            raise PermissionError("energy_uj")

    accountant = Accountant(Broken())
    accountant.before_step()
    accountant.step({"A": 5}, cpu_s=0.1, wall_s=0.1)
    spent = accountant.finish("A")
    assert spent.joules == 0.0 and spent.model_s == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("joules", "cpu", "shares"),
    [
        (9.0, {"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 6.0}),
        (9.0, {"a": 0.0}, {"a": 0.0}),
    ],
)
def test_split_by_cpu(joules: float, cpu: dict[str, float], shares: dict[str, float]) -> None:
    assert split_by_cpu(joules, cpu) == pytest.approx(shares)
