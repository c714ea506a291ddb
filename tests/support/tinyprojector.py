"""Generate a tiny, deterministic LLaVA-style ("mlp") vision projector GGUF (an mmproj file)
for the tiny text model (tinymodel.py), so the image tests run real libmtmd end to end.

What llama.cpp's tools/mtmd/clip.cpp reads (0.3.36's vendored copy; the keys are in
clip-impl.h): `clip.projector_type` = "mlp" and `clip.has_vision_encoder`; the required
`clip.vision.*` numbers (embedding_length, feed_forward_length, block_count, projection_dim,
attention.head_count, attention.layer_norm_epsilon, image_size, patch_size, image_mean,
image_std); tensors `v.patch_embd.weight` (a conv kernel: numpy (n_embd, 3, patch, patch)),
`v.position_embd.weight` (one row per patch), `v.blk.N.{attn_q,attn_k,attn_v,attn_out,ln1,
ln2,ffn_up,ffn_down}` and the projector `mm.0` → GELU → `mm.2`, whose output width must be the
text model's embedding width (mtmd refuses a mismatch at load).

The picture is square-padded and resized to IMAGE_SIZE, cut into patches of PATCH_SIZE: an
image is always (IMAGE_SIZE / PATCH_SIZE)² = IMAGE_TOKENS embeddings. Kept tiny because mtmd
encodes a warm-up image at load. A LLaVA projector uses the second-to-last encoder block, so
with two blocks only the first runs; both must be present.

Usage: ``python tests/support/tinyprojector.py OUT.gguf``.
"""

from __future__ import annotations

import os
import pathlib
import sys

import gguf
import numpy as np

from support.tinymodel import N_EMBD as TEXT_N_EMBD
from support.tinymodel import cached_file

FILE_NAME = "hearthbot-tiny-test-mmproj-f16.gguf"
SEED = 20261201

IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
N_EMBD = 32  # the vision encoder's width
N_HEAD = 2
N_FF = 48  # not N_EMBD: clip.cpp takes equal widths for old files' swapped up/down
N_LAYER = 2
MM_HIDDEN = 64
LAYER_NORM_EPS = 1e-6
STD = 0.05
# CLIP's normalisation constants, as real LLaVA projectors carry them.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def _tensors(out_width: int) -> dict[str, np.ndarray]:
    """Deterministic weights; numpy shapes are (out, in) as gguf expects."""
    rng = np.random.RandomState(SEED)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * STD).astype(np.float32)

    n_patches = IMAGE_TOKENS
    t: dict[str, np.ndarray] = {
        "v.patch_embd.weight": normal(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE),
        "v.patch_embd.bias": normal(N_EMBD),
        "v.position_embd.weight": normal(n_patches, N_EMBD),
        "v.pre_ln.weight": np.ones(N_EMBD, dtype=np.float32),
        "v.pre_ln.bias": np.zeros(N_EMBD, dtype=np.float32),
    }
    for i in range(N_LAYER):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            t[p + name + ".weight"] = normal(N_EMBD, N_EMBD)
            t[p + name + ".bias"] = normal(N_EMBD)
        for norm in ("ln1", "ln2"):
            t[p + norm + ".weight"] = np.ones(N_EMBD, dtype=np.float32)
            t[p + norm + ".bias"] = np.zeros(N_EMBD, dtype=np.float32)
        t[p + "ffn_up.weight"] = normal(N_FF, N_EMBD)
        t[p + "ffn_up.bias"] = normal(N_FF)
        t[p + "ffn_down.weight"] = normal(N_EMBD, N_FF)
        t[p + "ffn_down.bias"] = normal(N_EMBD)
    t["mm.0.weight"] = normal(MM_HIDDEN, N_EMBD)
    t["mm.0.bias"] = normal(MM_HIDDEN)
    t["mm.2.weight"] = normal(out_width, MM_HIDDEN)
    t["mm.2.bias"] = normal(out_width)
    # Matrices and the conv kernel as F16 (as converted projectors hold them), the rest F32.
    half = {name for name, a in t.items() if a.ndim >= 2 and "position_embd" not in name}
    return {k: (v.astype(np.float16) if k in half else v) for k, v in t.items()}


def write_tiny_projector(path: pathlib.Path, out_width: int = TEXT_N_EMBD) -> pathlib.Path:
    """Write the tiny projector to ``path``; the same code gives identical bytes.
    ``out_width``: its embeddings' width (another than the text model's: a wrong projector)."""
    path = pathlib.Path(path)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("hearthbot-tiny-test-mmproj")
    w.add_description("random-weight LLaVA-style projector for hearthbot's tests")
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_audio_encoder", False)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    w.add_uint32("clip.vision.embedding_length", N_EMBD)
    w.add_uint32("clip.vision.feed_forward_length", N_FF)
    w.add_uint32("clip.vision.block_count", N_LAYER)
    w.add_uint32("clip.vision.projection_dim", out_width)
    w.add_uint32("clip.vision.attention.head_count", N_HEAD)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", LAYER_NORM_EPS)
    w.add_array("clip.vision.image_mean", list(IMAGE_MEAN))
    w.add_array("clip.vision.image_std", list(IMAGE_STD))
    for name, array in _tensors(out_width).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def require_mtmd() -> None:
    """In a test: skip when llama-cpp-python has no libmtmd, but in CI (`CI=true`) fail, never
    skip: `make` builds it (docker/cmake_args.sh)."""
    import pytest

    try:
        import llama_cpp.mtmd_cpp  # noqa: F401
    except (OSError, RuntimeError) as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the image tests with libmtmd: {e}")
        pytest.skip(f"llama-cpp-python was built without libmtmd: {e}")


def tiny_projector_path(cache_dir: pathlib.Path) -> pathlib.Path:
    """Return the cached projector in ``cache_dir``, writing it atomically if missing."""
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cached_file(cache_dir / FILE_NAME, write_tiny_projector)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.gguf")
    out_path = write_tiny_projector(pathlib.Path(sys.argv[1]))
    print(f"{out_path} ({out_path.stat().st_size} bytes)")
