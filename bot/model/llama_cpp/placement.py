"""Where llama.cpp puts the model and how it stores the KV cache: the settings that ask for
it (Offload, Attention), and what llama.cpp's log says it did (Placement).

llama.cpp has no getters for the layers it offloaded, whether flash attention is on or the KV
cache's type, so they are read from the lines it logs while loading (`load_tensors: layer N
assigned to device X`, `llama_context: flash_attn = enabled`, `llama_kv_cache: ... K (q8_0)`):
what it did, not what was asked.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp

KV_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}
FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def gpu_backend() -> bool:
    """Whether this llama.cpp build can offload layers (CUDA, Vulkan, Metal, ROCm...)."""
    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass(frozen=True, slots=True)
class Offload:
    """Which layers go to which GPUs: `[model] n_gpu_layers`, `main_gpu`, `tensor_split`."""

    n_gpu_layers: int | None = None  # None: all with a GPU backend, else 0; -1: all
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()

    def layers(self) -> int:
        """n_gpu_layers as llama.cpp takes it (-1: all)."""
        if self.n_gpu_layers is None:
            return -1 if gpu_backend() else 0
        return self.n_gpu_layers

    def apply(self, params: llama_cpp.llama_model_params) -> object:
        """Set the params; returns what must stay alive until the model is loaded (the
        tensor_split array llama.cpp reads through a pointer)."""
        params.n_gpu_layers = self.layers()
        params.main_gpu = self.main_gpu
        if not self.tensor_split:
            return None
        n = llama_cpp.llama_max_devices()
        if len(self.tensor_split) > n:
            raise ValueError(f"tensor_split names {len(self.tensor_split)} devices, at most {n}")
        split = (ctypes.c_float * n)(*self.tensor_split)  # llama.cpp reads n floats
        params.tensor_split = split
        return split


@dataclass(frozen=True, slots=True)
class Attention:
    """How a context stores and reads its KV cache: `[model] kv_type` and `flash_attn`."""

    kv_type: str = "f16"
    flash_attn: str = "off"

    def flash_attn_type(self, offloaded: bool) -> int:
        """ "auto" lets llama.cpp decide where it runs the model on a GPU, or when a quantized V
        cache needs flash attention; on the CPU alone it stays off (docs/performance.md: four
        sequences decoded at a quarter of the speed, and logits varied with the batch)."""
        if self.flash_attn == "auto" and not offloaded and self.kv_type == "f16":
            return FLASH_ATTN["off"]
        return FLASH_ATTN[self.flash_attn]

    def apply(self, params: llama_cpp.llama_context_params, offloaded: bool) -> None:
        params.type_k = KV_TYPES[self.kv_type]
        params.type_v = KV_TYPES[self.kv_type]
        params.flash_attn_type = self.flash_attn_type(offloaded)


@dataclass(frozen=True, slots=True)
class Placement:
    """What llama.cpp logged it did: layers per device, flash attention, the KV cache types."""

    layers: tuple[tuple[str, int], ...] = ()  # (device, layers), in the order first seen
    flash_attn: bool | None = None
    k_type: str = ""
    v_type: str = ""

    @property
    def offloaded(self) -> int:
        """Layers on a device other than the CPU."""
        return sum(n for device, n in self.layers if not device.upper().startswith("CPU"))

    @property
    def n_layers(self) -> int:
        return sum(n for _, n in self.layers)

    @property
    def gpus(self) -> list[str]:
        return [d for d, _ in self.layers if not d.upper().startswith("CPU")]

    def merged(self, other: Placement) -> Placement:
        """The model's placement with a context's attention facts."""
        return Placement(
            self.layers or other.layers,
            other.flash_attn if other.flash_attn is not None else self.flash_attn,
            other.k_type or self.k_type,
            other.v_type or self.v_type,
        )


_LAYER = re.compile(r"load_tensors: layer +\d+ assigned to device (\S+?),")
_FLASH = re.compile(r"llama_context: flash_attn += (\w+)")
_KV = re.compile(r"llama_kv_cache: size = .*K \((\w+)\).*V \((\w+)\)")


def read_placement(lines: Sequence[str]) -> Placement:
    """Placement from llama.cpp's log lines of one load (or one context)."""
    devices: Counter[str] = Counter()
    flash: bool | None = None
    k_type = v_type = ""
    for line in lines:
        if m := _LAYER.search(line):
            devices[m.group(1)] += 1
        elif m := _FLASH.search(line):
            flash = m.group(1) == "enabled"
        elif m := _KV.search(line):
            k_type, v_type = m.group(1), m.group(2)
    return Placement(tuple(devices.items()), flash, k_type, v_type)
