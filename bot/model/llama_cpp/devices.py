"""The devices llama.cpp can run on, from ggml's backend registry in libggml.

llama-cpp-python binds none of the ggml_backend_dev_* functions, so the few needed here are
bound with ctypes, on first use, from the libggml that llama-cpp-python loaded.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

# enum ggml_backend_dev_type
KINDS = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator"}


@dataclass(frozen=True, slots=True)
class Device:
    """One device of ggml's registry: its name, what it is, and its memory."""

    name: str  # "CPU", "CUDA0", "Vulkan0"...
    description: str  # e.g. the CPU's model or the card's name
    kind: str  # a value of KINDS
    free_bytes: int
    total_bytes: int

    @property
    def gpu(self) -> bool:
        return self.kind != "CPU"


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libggml.dylib"
    return "ggml.dll" if sys.platform == "win32" else "libggml.so"


@functools.cache
def _ggml() -> ctypes.CDLL:
    """libggml beside llama-cpp-python's libllama (already loaded: the same handle)."""
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / _library_name()))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.ggml_backend_dev_memory.restype = None
    if lib.ggml_backend_dev_count() == 0 and hasattr(lib, "ggml_backend_load_all"):
        lib.ggml_backend_load_all()  # a build with backends as loadable modules
    return lib


def devices() -> list[Device]:
    """Every device llama.cpp sees, in ggml's order (GPUs first, the CPU last)."""
    lib = _ggml()
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                kind=KINDS.get(lib.ggml_backend_dev_type(dev), "unknown"),
                free_bytes=free.value,
                total_bytes=total.value,
            )
        )
    return found
