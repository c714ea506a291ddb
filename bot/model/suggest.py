"""`hearthbot model suggest`: which catalog models this box can carry, from fixed facts.

Pure logic: the machine's facts (memory this process may use, the GPUs' free memory, cores),
the configured KV pool and a speed measured on this box (or a rough figure) go in; table rows
and their text come out. bot/app/suggest.py gathers the facts and prints.

Memory needed is the estimate the in-process backend enforces at load: weights + the KV pool
(`[model] n_ctx × parallel` tokens, or kv_pool_tokens) + saved channels (kv_cache_mb) + working
memory. A model runs on the GPUs when its weights and KV pool fit their free memory together
(llama.cpp spreads the layers over them), else on the CPU when it fits the RAM.

Generation reads every weight once per token, so its speed is roughly inversely proportional
to the file's size: a speed measured with one model scales to the others by their sizes. It
says nothing across devices: a CPU measurement is not scaled to a GPU row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.model.catalog import CatalogEntry

GIB = 2**30
# With no model to measure: the bytes a CPU reads per second while generating, about what a
# desktop's dual-channel memory gives in practice (10 GB/s: a 1 GB file at ~10 tokens/s).
ROUGH_CPU_BYTES_PER_S = 10e9


@dataclass(frozen=True, slots=True)
class Gpu:
    """A GPU llama.cpp sees, with its free memory."""

    name: str
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Machine:
    """What the box offers the model: memory this process may use (None: unknown), GPUs,
    cores."""

    available_bytes: int | None
    gpus: tuple[Gpu, ...] = ()
    cores: int = 1

    @property
    def gpu_free_bytes(self) -> int:
        return sum(gpu.free_bytes for gpu in self.gpus)


@dataclass(frozen=True, slots=True)
class Speed:
    """Generation speed of a model file of `size_bytes` on this box; `measured` False: the
    rough figure."""

    tokens_per_s: float
    size_bytes: int
    on_gpu: bool = False
    measured: bool = True

    def scaled(self, size_bytes: int) -> float:
        return self.tokens_per_s * self.size_bytes / size_bytes


def rough_speed() -> Speed:
    """The stated rough CPU figure, for a box with no model to measure."""
    size = 10**9
    return Speed(ROUGH_CPU_BYTES_PER_S / size, size, on_gpu=False, measured=False)


@dataclass(frozen=True, slots=True)
class Row:
    """One catalog file weighed against the box."""

    entry: CatalogEntry
    needed_bytes: int  # RAM on the CPU; weights + KV pool on the GPUs
    runs_on: str  # "GPU", "CPU", "no" (fits neither) or "?" (memory unknown)
    tokens_per_s: float | None  # None: not comparable with the speed measured


def rows(
    entries: Sequence[CatalogEntry],
    machine: Machine,
    *,
    pool_tokens: int,
    kv_type: str = "f16",
    saved_bytes: int = 0,
    speed: Speed | None = None,
) -> list[Row]:
    """Every entry, smallest file first, with what it needs, where it fits and how fast."""
    speed = speed or rough_speed()
    found = []
    for entry in sorted(entries, key=lambda e: (e.size_bytes, e.name)):
        needed = entry.needed_bytes(pool_tokens, kv_type, saved_bytes)
        on_gpu = entry.size_bytes + entry.kv_bytes(pool_tokens, kv_type)
        if machine.gpus and on_gpu <= machine.gpu_free_bytes:
            where, needed = "GPU", on_gpu
        elif machine.available_bytes is None:
            where = "?"
        else:
            where = "CPU" if needed <= machine.available_bytes else "no"
        # A speed says nothing about another device, nor about a model that does not fit.
        same_device = (where == "GPU") == speed.on_gpu
        tps = speed.scaled(entry.size_bytes) if same_device and where != "no" else None
        found.append(Row(entry, needed, where, tps))
    return found


def table(found: Sequence[Row], current_file: str | None = None) -> list[str]:
    """The rows as aligned text; the configured model's file is marked with *."""
    lines = [
        f"  {'model':<26}{'params':>6}  {'quant':<7}{'file':>9}{'needs':>10}  "
        f"{'fits':<5}{'tokens/s':>9}"
    ]
    for row in found:
        e = row.entry
        mark = "*" if current_file and e.file == current_file else " "
        tps = (
            "—"
            if row.tokens_per_s is None
            else f"~{row.tokens_per_s:.{int(row.tokens_per_s < 10)}f}"
        )
        lines.append(
            f"{mark} {e.spec:<26}{e.params:>6}  {e.quant:<7}{_gib(e.size_bytes):>9}"
            f"{_gib(row.needed_bytes):>10}  {row.runs_on:<5}{tps:>9}"
        )
    return lines


def machine_text(machine: Machine) -> str:
    """One line: the facts the table was weighed against."""
    ram = "unknown" if machine.available_bytes is None else _gib(machine.available_bytes)
    gpus = ", ".join(f"{g.name} {_gib(g.free_bytes)} free" for g in machine.gpus) or "no GPU"
    return f"{machine.cores} cores, {ram} memory available, {gpus}"


def speed_text(speed: Speed) -> str:
    """Where the tokens/s column comes from."""
    if not speed.measured:
        return (
            "tokens/s: a rough figure (no model here to measure): a CPU reading about "
            f"{ROUGH_CPU_BYTES_PER_S / 1e9:.0f} GB/s of weights, i.e. file size / that per token"
        )
    where = "a GPU" if speed.on_gpu else "the CPU"
    return (
        f"tokens/s: measured here with the configured model on {where} "
        f"({speed.tokens_per_s:.1f} tokens/s, {_gib(speed.size_bytes)} file), scaled by file "
        "size (generation reads every weight once per token); — where the device differs"
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"
