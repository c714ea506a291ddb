"""Pictures for llama-server: the `/v1/completions` prompt object with `multimodal_data`.

llama-server started with a projector (`--mmproj`) takes pictures on /v1/completions only as
a prompt object, `{"prompt_string": text, "multimodal_data": [base64 image, ...]}`, whose text
holds one media marker per picture, in order (tools/server/README.md). Its `/props` says
whether it sees images (`modalities.vision`) and names its marker (`media_marker`: random per
process in recent builds unless LLAMA_MEDIA_MARKER pins it; older builds use libmtmd's
`mtmd_default_marker()`, `<__media__>`, and do not name it).

That prompt is text, not token ids: the server tokenizes it with special tokens parsed, so a
turn marker typed in a message becomes a control token there (as on a server that takes only
text), and its media marker typed in a message would become a picture's slot. So each
message's copies of the marker are broken by a word joiner first: they stay visible text.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.model.openai.errors import ServerError, server_at
from bot.model.types import DecodedImage, GenerationRequest, ModelInfo

DEFAULT_MARKER = "<__media__>"  # libmtmd's mtmd_default_marker()
_JOINER = "\u2060"  # WORD JOINER: invisible, and no marker contains it
# A picture's tokens until the server has counted a prompt with one: LLaVA-1.5's 576 (336 px).
IMAGE_TOKENS_GUESS = 576


@dataclass(frozen=True, slots=True)
class ServerVision:
    """What a server's /props says of pictures: whether it sees them, and its media marker."""

    sees_images: bool = False
    marker: str = DEFAULT_MARKER


def read_props(props: Mapping[str, Any]) -> ServerVision:
    """llama-server's /props: `modalities: {vision: true}` and `media_marker`."""
    modalities = props.get("modalities")
    vision = isinstance(modalities, dict) and modalities.get("vision") is True
    marker = props.get("media_marker")
    return ServerVision(vision, marker if isinstance(marker, str) and marker else DEFAULT_MARKER)


def neutralised(text: str, marker: str) -> str:
    """`text` with every copy of the media marker broken after its first character (the
    joiner is in no marker, so breaking one can never make another)."""
    return text.replace(marker, marker[:1] + _JOINER + marker[1:])


def png_base64(image: DecodedImage) -> str:
    """The picture as a PNG (a format every server's image loader reads), base64."""
    from PIL import Image  # Pillow: imported when a picture is sent, not at start

    buffer = io.BytesIO()
    Image.frombytes("RGB", (image.width, image.height), image.rgb).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def prompt_object(
    request: GenerationRequest,
    vision: ServerVision,
    base_url: str,
    render: Callable[[Sequence[dict[str, str]]], str],
) -> dict[str, Any]:
    """The prompt object: each message's pictures as markers at the start of its content
    (where the in-process backend puts them), the pictures in the same order. A server
    whose /props did not say it sees images gets none (llama-server would refuse them)."""
    if not vision.sees_images:
        raise ServerError(f"{server_at(base_url)} does not see images (said its /props)")
    marker = vision.marker
    marked, pictures = [], []
    for index, message in enumerate(request.messages):
        shown = request.images.get(index, ())
        content = neutralised(message.get("content", ""), marker)
        marked.append({**message, "content": marker * len(shown) + content})
        pictures += [png_base64(image) for image in shown]
    return {"prompt_string": render(marked), "multimodal_data": pictures}


def count(images: Mapping[int, Sequence[DecodedImage]]) -> int:
    """How many pictures a request shows."""
    return sum(len(shown) for shown in images.values())


def seen_by(info: ModelInfo, vision: ServerVision) -> ModelInfo:
    """The model's info as the server's /props has it: it sees images, each a guessed
    IMAGE_TOKENS_GUESS tokens until `learned` knows better; or it does not."""
    tokens = (info.image_tokens or IMAGE_TOKENS_GUESS) if vision.sees_images else 0
    return dataclasses.replace(info, sees_images=vision.sees_images, image_tokens=tokens)


def learned(info: ModelInfo, picture_tokens: int, pictures: int) -> ModelInfo:
    """The info once the server has counted a prompt with `pictures` in it: what its count
    has beyond our text's is theirs, one count each (a fixed-size projector's)."""
    per_picture = picture_tokens // pictures if pictures else 0
    if per_picture <= 0 or per_picture == info.image_tokens:
        return info
    return dataclasses.replace(info, image_tokens=per_picture)
