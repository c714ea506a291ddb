"""Checks on a GGUF file before llama.cpp maps it: a clear error beats a crash later.

llama.cpp memory-maps the weights, so a model larger than the free memory "loads" fine and
then thrashes or gets killed mid-answer. We read just enough of the GGUF header to estimate
weights + KV cache and compare that with the memory available to this process.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Where it is read now; the in-process backend still imports it from here.
from bot.model.memory import available_memory as available_memory

GGUF_MAGIC = b"GGUF"
# Value types of the GGUF key/value section, with the byte size of the fixed-size ones.
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRUCT = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
# Headroom for llama.cpp's compute buffers and our own process.
OVERHEAD_BYTES = 256 * 1024 * 1024
# Bytes per cached K or V value, by `[model] kv_type`: a q8_0 block holds 32 values in 34 bytes
# (0.53 of f16), a q4_0 block in 18 (0.28).
KV_VALUE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


class ModelFileError(Exception):
    """The model cannot be used; the message names the file and says why."""


@dataclass(frozen=True, slots=True)
class GgufSummary:
    """The facts of a GGUF header that decide how much memory the model needs."""

    path: Path
    size_bytes: int
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    # The head size the header states (`attention.key_length` / `value_length`); 0: none,
    # n_embd / n_head. Qwen3 and Gemma have wider heads than that, and cache them so.
    key_length: int = 0
    value_length: int = 0

    def kv_bytes(self, n_ctx: int, n_seq: int = 1, kv_type: str = "f16") -> int:
        """K and V for every layer and position, stored as `kv_type` (llama.cpp's default
        is f16)."""
        key = self.key_length or self.n_embd // max(self.n_head, 1)
        value = self.value_length or key
        return kv_cache_bytes(
            self.n_layer, self.n_head_kv, key, n_ctx * n_seq, kv_type, value_dim=value
        )

    def needed_bytes(self, n_ctx: int, n_seq: int = 1, kv_type: str = "f16") -> int:
        return self.size_bytes + self.kv_bytes(n_ctx, n_seq, kv_type) + OVERHEAD_BYTES


def kv_cache_bytes(
    n_layer: int,
    n_head_kv: int,
    head_dim: int,
    tokens: int,
    kv_type: str = "f16",
    value_dim: int | None = None,
) -> int:
    """K and V of `tokens` positions in every layer, stored as `kv_type`: what a model's KV
    cache takes, from its header (GgufSummary) or its catalog entry (bot.model.catalog).
    `value_dim`: a value head's size when it differs from a key head's (`head_dim`)."""
    per_head = head_dim + (value_dim or head_dim)
    values = n_layer * n_head_kv * per_head * tokens
    return int(values * KV_VALUE_BYTES[kv_type])


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8))
    if length > 1 << 24:
        raise ValueError("implausible string length")
    return _read(f, length).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> object:
    if kind in _FIXED:
        return struct.unpack(_STRUCT[kind], _read(f, _FIXED[kind]))[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind, count = struct.unpack("<IQ", _read(f, 12))
        if item_kind in _FIXED:
            f.seek(_FIXED[item_kind] * count, 1)  # arrays (token scores...) are skipped
        else:
            for _ in range(count):
                _value(f, item_kind)
        return None
    raise ValueError(f"unknown value type {kind}")


def read_metadata(path: Path) -> dict[str, object]:
    """The scalar key/values of a GGUF header (arrays are skipped)."""
    with path.open("rb") as f:
        if _read(f, 4) != GGUF_MAGIC:
            raise ValueError("not a GGUF file (bad magic bytes)")
        version, _tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        meta: dict[str, object] = {}
        for _ in range(n_kv):
            key = _string(f)
            (kind,) = struct.unpack("<I", _read(f, 4))
            meta[key] = _value(f, kind)
        return meta


def inspect_model(path: Path) -> GgufSummary:
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        meta = read_metadata(path)
    except PermissionError:
        raise ModelFileError(f"model file is not readable: {path}") from None
    except (EOFError, ValueError, UnicodeDecodeError, struct.error) as exc:
        reason = str(exc) or "file ends early"
        raise ModelFileError(
            f"model file is corrupt or not a GGUF model: {path} ({reason})"
        ) from None
    arch = str(meta.get("general.architecture", ""))

    def number(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if not isinstance(value, int) or value <= 0:
            raise ModelFileError(f"model file {path} lacks {arch}.{key}; is it a GGUF LLM?")
        return value

    n_head = number("attention.head_count")
    key_length = meta.get(f"{arch}.attention.key_length")
    value_length = meta.get(f"{arch}.attention.value_length")
    return GgufSummary(
        path=path,
        size_bytes=path.stat().st_size,
        architecture=arch,
        n_layer=number("block_count"),
        n_embd=number("embedding_length"),
        n_head=n_head,
        n_head_kv=number("attention.head_count_kv", n_head),
        key_length=key_length if isinstance(key_length, int) and key_length > 0 else 0,
        value_length=value_length if isinstance(value_length, int) and value_length > 0 else 0,
    )


def check_fits(
    summary: GgufSummary,
    n_ctx: int,
    available: int | None,
    extra_bytes: int = 0,
    kv_type: str = "f16",
) -> None:
    """`extra_bytes`: memory the backend will add on top (saved KV state of other channels)."""
    if available is None:
        return
    needed = summary.needed_bytes(n_ctx, kv_type=kv_type) + extra_bytes
    if needed > available:
        raise ModelFileError(
            f"model {summary.path} needs about {needed / 2**30:.1f} GiB (weights "
            f"{summary.size_bytes / 2**30:.1f} GiB + KV cache for n_ctx={n_ctx}) but only "
            f"{available / 2**30:.1f} GiB is available; use a smaller quantization or a "
            "smaller [model] n_ctx"
        )
