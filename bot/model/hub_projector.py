"""A vision model's projector (mmproj) in the hub repo it is pulled from.

`hearthbot model pull REPO FILE` lists the repo's files (`repo_files`) and takes the projector
`choose_projector` picks, if any. A projector file is a `.gguf` whose name starts with
"mmproj" (any case, in any folder of the repo). When a repo holds several (usually one per
precision), the rule is:

1. the one whose precision tag is the model file's (`x-Q8_0.gguf` takes `mmproj-x-Q8_0.gguf`);
2. else the first of f16, bf16, f32, q8_0, then any other: a projector is small beside its
   model and a quantized one costs picture quality, so the 16-bit ones come first;
3. ties (no tag, or two files with the same tag) by name, so the choice is always the same.

A precision tag is the last one of f32/fp32, f16/fp16, bf16, or a llama.cpp quant name
(q8_0, q4_k_m, iq4_xs, ...) standing on its own in the name: between `-`, `_`, `.` or the ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from bot.model.pull import PullError, hub_endpoint, reason

# Quants are followed by `_` + part (q4_k_m): the tag runs over them, up to a `-`/`.`/end.
_TAG = re.compile(r"(?<![a-z0-9])(bf16|fp?16|fp?32|i?q\d(?:_[a-z0-9]+)*)(?![a-z0-9])")
PREFERRED = ("f16", "bf16", "f32", "q8_0")


def is_projector(name: str) -> bool:
    """A `.gguf` whose file name starts with "mmproj", in any case."""
    base = PurePosixPath(name).name.lower()
    return base.startswith("mmproj") and base.endswith(".gguf")


def precision(name: str) -> str | None:
    """The precision tag of a GGUF file name, lower case (fp16 read as f16), or None."""
    stem = PurePosixPath(name).name.lower().removesuffix(".gguf")
    tags = _TAG.findall(stem)
    if not tags:
        return None
    return tags[-1].replace("fp", "f")


def choose_projector(model_file: str, names: Iterable[str]) -> str | None:
    """The repo's projector for `model_file` by the rule above, or None when it has none."""
    found = sorted({n for n in names if is_projector(n) and n != model_file})
    if not found:
        return None
    wanted = precision(model_file)

    def key(name: str) -> tuple[bool, int, str]:
        tag = precision(name)
        rank = PREFERRED.index(tag) if tag in PREFERRED else len(PREFERRED)
        return (wanted is None or tag != wanted, rank, name)

    return min(found, key=key)


def repo_files(repo: str) -> list[str]:
    """Every file's path in hub repo `repo` (its main branch), through the hub's tree API.

    A failure is a PullError of one line: the caller goes on without a projector.
    """
    try:
        from huggingface_hub import HfApi

        return HfApi(endpoint=hub_endpoint()).list_repo_files(repo)
    except Exception as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        why = f"HTTP {status}" if status is not None else reason(e) or type(e).__name__
        raise PullError(
            f"could not list the files of {repo} to look for a vision projector: {why}"
        ) from e
