"""The opt-in `/v1/chat/completions` request (`[model] openai_api = "chat"`): for servers that
take pictures only as `image_url` parts of chat messages (vLLM, Ollama, LM Studio, ...), not
as llama-server's `/v1/completions` prompt object (bot.model.openai.pictures).

The server applies its own chat template to the messages, so what it evaluates is not the
prompt counted here: the core still trims with the GGUF's template and vocabulary plus a
guessed IMAGE_TOKENS_GUESS per picture, and a reply's prompt count is the server's where it
reports one. Counts are approximate (the README says so), and typed turn markers are the
server's template's business. Such servers have no /props: whether the model sees images is
the user's word (`[model] openai_vision`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.masking import mask_url
from bot.model.openai.errors import ServerError, server_at
from bot.model.openai.pictures import IMAGE_TOKENS_GUESS, png_base64
from bot.model.types import DecodedImage, GenerationRequest, ModelInfo

ENDPOINT = "chat/completions"


def chat_messages(
    request: GenerationRequest, sees_images: bool, base_url: str
) -> list[dict[str, Any]]:
    """The request's messages, each one's pictures as `image_url` parts before its text
    (where the in-process backend puts them); a message without pictures keeps its plain
    text content (what every server takes)."""
    if request.images and not sees_images:
        raise ServerError(
            f"{server_at(base_url)} is not said to see images ([model] openai_vision = false)"
        )
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        shown = request.images.get(index, ())
        if not shown:
            messages.append(dict(message))
            continue
        text = message.get("content", "")
        # No empty text part after a picture alone: some servers refuse one.
        words = [{"type": "text", "text": text}] if text else []
        messages.append({**message, "content": [*map(image_part, shown), *words]})
    return messages


def image_part(image: DecodedImage) -> dict[str, Any]:
    """A picture as a chat content part: a PNG data URL."""
    url = f"data:image/png;base64,{png_base64(image)}"
    return {"type": "image_url", "image_url": {"url": url}}


def chat_info(info: ModelInfo, base_url: str, sees_images: bool) -> ModelInfo:
    """The model's info in chat mode: `!status` shows its counts are approximate, and a
    picture is a guessed IMAGE_TOKENS_GUESS tokens when the user says the model sees them."""
    return dataclasses.replace(
        info,
        description=f"served by {mask_url(base_url)}, chat API: token counts approximate",
        sees_images=sees_images,
        image_tokens=IMAGE_TOKENS_GUESS if sees_images else 0,
    )
