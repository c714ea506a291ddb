"""The catalog of well-known instruct GGUFs (bot/model/catalog.toml): short names for
`hearthbot model pull`, and the rows `hearthbot model suggest` weighs.

Each entry names a hub file with its size and sha256, copied from a public record of it, and
the facts of its architecture that size the KV cache. A vision model's entry also names its
projector (mmproj) file the same way: repo, file, size and sha256, all four or none. A short
name is `<name>[:<quant>]`, e.g. `qwen2.5-3b` (its Q4_K_M) or `qwen2.5-7b:q5_k_m`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bot.model.gguf import OVERHEAD_BYTES, kv_cache_bytes

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
DEFAULT_QUANT = "Q4_K_M"
QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CatalogError(Exception):
    """A short name is unknown, or the catalog file is broken; the message says which."""


@dataclass(frozen=True, slots=True)
class ProjectorFile:
    """A vision model's projector (mmproj GGUF) on the hub, with its size and sha256."""

    repo: str
    file: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One hub file of the catalog: which model and quantization, where, its size and sha256."""

    name: str  # the short name, e.g. "qwen2.5-3b"
    params: str  # e.g. "3B"
    quant: str  # e.g. "Q4_K_M"
    repo: str
    file: str
    size_bytes: int
    sha256: str
    n_layer: int
    n_head_kv: int
    head_dim: int
    source: str  # where the size and sha256 come from
    projector: ProjectorFile | None = None  # a vision model's mmproj, pulled beside it

    @property
    def spec(self) -> str:
        """The short name that pulls exactly this file, e.g. "qwen2.5-7b:q5_k_m"."""
        return f"{self.name}:{self.quant.lower()}"

    def kv_bytes(self, tokens: int, kv_type: str = "f16") -> int:
        return kv_cache_bytes(self.n_layer, self.n_head_kv, self.head_dim, tokens, kv_type)

    def needed_bytes(self, tokens: int, kv_type: str = "f16", saved_bytes: int = 0) -> int:
        """Memory to run it with a KV pool of `tokens`: the estimate the in-process backend
        enforces at load (bot.model.gguf.check_fits), from catalog facts instead of a header;
        a vision model's projector file counts too (libmtmd loads it beside the model)."""
        mmproj = self.projector.size_bytes if self.projector else 0
        weights = self.size_bytes + mmproj
        return weights + self.kv_bytes(tokens, kv_type) + OVERHEAD_BYTES + saved_bytes


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """Every entry of the catalog file, smallest file first."""
    path = path or CATALOG_PATH
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc}") from None
    arch = data.get("arch", {})
    entries = []
    for i, row in enumerate(data.get("model", [])):
        try:
            facts = arch[row["name"]]
            entry = CatalogEntry(
                name=str(row["name"]),
                params=str(facts["params"]),
                quant=str(row["quant"]).upper(),
                repo=str(row["repo"]),
                file=str(row["file"]),
                size_bytes=int(row["size"]),
                sha256=str(row["sha256"]).lower(),
                n_layer=int(facts["n_layer"]),
                n_head_kv=int(facts["n_head_kv"]),
                head_dim=int(facts["head_dim"]),
                source=str(row["source"]),
                projector=_projector(row),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"model catalog {path}: entry {i + 1} lacks {exc}") from None
        if not _SHA256.fullmatch(entry.sha256) or entry.size_bytes <= 0:
            raise CatalogError(f"model catalog {path}: {entry.spec} has no valid sha256 or size")
        mmproj = entry.projector
        if mmproj is not None and (not _SHA256.fullmatch(mmproj.sha256) or mmproj.size_bytes <= 0):
            raise CatalogError(
                f"model catalog {path}: {entry.spec}'s projector has no valid sha256 or size"
            )
        entries.append(entry)
    return sorted(entries, key=lambda e: (e.size_bytes, e.name))


def _projector(row: dict[str, object]) -> ProjectorFile | None:
    """The row's `mmproj_*` keys: none, or the file with its size and sha256 (an unpinned
    projector is refused like an unpinned model: the pull could not check it)."""
    if "mmproj_file" not in row:
        return None
    return ProjectorFile(
        repo=str(row.get("mmproj_repo", row["repo"])),
        file=str(row["mmproj_file"]),
        size_bytes=int(row["mmproj_size"]),  # type: ignore[call-overload]
        sha256=str(row["mmproj_sha256"]).lower(),
    )


def is_short_name(text: str) -> bool:
    """A short name has no "/" (a hub repo always has one)."""
    return "/" not in text


def resolve(spec: str, entries: list[CatalogEntry]) -> CatalogEntry:
    """The entry `name[:quant]` names (Q4_K_M when no quantization is given)."""
    name, _, quant = spec.strip().partition(":")
    name, quant = name.lower(), (quant or DEFAULT_QUANT).upper()
    same_name = [e for e in entries if e.name == name]
    if not same_name:
        known = ", ".join(sorted({e.name for e in entries}))
        raise CatalogError(f"unknown model {name!r}: the catalog knows {known}")
    for entry in same_name:
        if entry.quant == quant:
            return entry
    have = ", ".join(e.quant.lower() for e in same_name)
    raise CatalogError(f"the catalog has no {quant} of {name}: it lists {have}")


def neighbours(
    entries: list[CatalogEntry], n_params: float, quant: str
) -> tuple[CatalogEntry | None, CatalogEntry | None]:
    """The catalog's next smaller and next larger model than one of `n_params` parameters (a
    nominal size within 15% counts as the same: "0.5B" is Qwen2.5-0.5B's 494M), in `quant`
    when the catalog has that size in it, else its smallest file of that size."""
    entries = [e for e in entries if e.projector is None]  # a text model's neighbours: text
    sizes = sorted({params_value(e.params) for e in entries})
    below = [s for s in sizes if s < n_params / 1.15]
    above = [s for s in sizes if s > n_params * 1.15]

    def pick(size: float) -> CatalogEntry:
        same = [e for e in entries if params_value(e.params) == size]
        same_quant = [e for e in same if e.quant == quant.upper()]
        return min(same_quant or same, key=lambda e: e.size_bytes)

    return (pick(below[-1]) if below else None), (pick(above[0]) if above else None)


def params_value(params: str) -> float:
    """A nominal size as a number: "1.5B" → 1.5e9, "500M" → 5e8, anything else 0."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([BM])\s*", params.upper())
    if not match:
        return 0.0
    return float(match[1]) * (1e9 if match[2] == "B" else 1e6)
