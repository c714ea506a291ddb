"""Image intake: the bytes of a posted picture become a small RGB bitmap the projector can read,
or an ImageRejected that names what is wrong (the notice the user gets). The decode is pure and
blocking (CPU work); `take_pictures` has a message's pictures downloaded by its adapter and
decoded off the event loop, before any model work. docs/images.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import structlog
from PIL import Image, UnidentifiedImageError

from bot import texts
from bot.events import Adapter, Incoming, ReadsImages
from bot.image_store import Picture
from bot.model.types import DecodedImage, ModelInfo
from bot.settings import ImageSettings

log = structlog.get_logger(__name__)

# The formats a chat client posts as a picture; Pillow tries no other decoder (a TIFF or PSD
# posted as a file is refused as unreadable rather than parsed by a rarely used plugin).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")

# Pillow's own decompression-bomb limit, set explicitly instead of trusting its default (~89 MP):
# it raises above twice this, warns above it. The configured limit ([images] max_megapixels,
# at most this) is checked first, from the header, so Pillow's is the backstop.
PILLOW_MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = PILLOW_MAX_PIXELS


class ImageProblem(Enum):
    """Why an image was refused (bot.texts words each for the user)."""

    TOO_MANY_BYTES = "too_many_bytes"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    HUGE_DIMENSIONS = "huge_dimensions"
    DECOMPRESSION_BOMB = "decompression_bomb"
    NOT_DOWNLOADED = "not_downloaded"


class ImageRejected(Exception):
    """An image that is not decoded: its problem, and a detail for the log (never the bytes)."""

    def __init__(
        self, problem: ImageProblem, detail: str, size: tuple[int, int] | None = None
    ) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail
        self.size = size  # (width, height) from the header, when it was read


@dataclass(frozen=True)
class ImageLimits:
    """The caps an image passes before it is decoded ([images] settings)."""

    max_bytes: int
    max_pixels: int  # width × height of the source, read from the header before decoding
    max_side: int  # the source's longest side, in pixels


@dataclass(frozen=True, slots=True)
class PictureRefused:
    """A picture of the message could not be taken: what its sender is told instead."""

    notice: str


# The side pictures shrink to when the backend names none (a projector that resizes itself).
FALLBACK_SIDE_PX = 768

# A channel hears "this model cannot see images" at most this often.
BLIND_NOTICE_INTERVAL_S = 3600.0


class OncePer:
    """Yes for a key at most once per interval (the no-projector notice, per channel); keeps
    at most `most_keys` keys, forgetting the oldest first."""

    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic, most_keys: int = 4096
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self.most_keys = most_keys
        self._last: dict[str, float] = {}  # key → when it was last yes, oldest first

    def due(self, key: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.most_keys:
            del self._last[next(iter(self._last))]
        return True


def limits_from(settings: ImageSettings) -> ImageLimits:
    """The caps of the [images] section."""
    return ImageLimits(
        max_bytes=settings.max_kb * 1024,
        max_pixels=int(settings.max_megapixels * 1_000_000),
        max_side=settings.max_side_px,
    )


def refusal_notice(name: str, rejected: ImageRejected, limits: ImageLimits) -> str:
    """The sentence the user gets for a refused image called ``name``."""
    width, height = rejected.size or (0, 0)
    return texts.IMAGE_REFUSED[rejected.problem.value].format(
        name=name, limit_mb=round(limits.max_bytes / 1_048_576, 1), width=width, height=height
    )


async def take_pictures(
    adapter: Adapter, message: Incoming, info: ModelInfo, settings: ImageSettings
) -> list[Picture] | PictureRefused:
    """The message's pictures, downloaded (up to [images] max_kb each) and decoded off the
    event loop, while the model sees images; none otherwise (the answer then says it cannot
    see them). The first that fails refuses the message: its notice is shown, and nothing
    else happens (nothing is kept)."""
    if not message.images or not info.sees_images or not isinstance(adapter, ReadsImages):
        return []
    limits = limits_from(settings)
    fit = info.image_side_px or FALLBACK_SIDE_PX
    taken = []
    for index, name in enumerate(message.images):
        fetched = await adapter.images.read_image(message, index, limits.max_bytes)
        try:
            if fetched.over_cap:
                raise ImageRejected(ImageProblem.TOO_MANY_BYTES, "over the cap when downloaded")
            if fetched.data is None:
                raise ImageRejected(ImageProblem.NOT_DOWNLOADED, "the adapter could not get it")
            image = await asyncio.to_thread(_decode_guarded, fetched.data, limits, fit)
        except ImageRejected as rejected:
            log.info("image refused", problem=rejected.problem.value, detail=rejected.detail)
            refused = PictureRefused(refusal_notice(name, rejected, limits))
            await adapter.open_reply(message).fail(refused.notice)
            return refused
        taken.append(Picture(name, image))
    return taken


def _decode_guarded(data: bytes, limits: ImageLimits, fit: int) -> DecodedImage:
    """decode_image, where whatever else a broken file makes Pillow raise is unreadable."""
    try:
        return decode_image(data, limits, fit)
    except ImageRejected:
        raise
    except Exception as e:  # a hostile file must not end the answer with a traceback
        raise ImageRejected(ImageProblem.UNREADABLE, f"{type(e).__name__}: {e}") from e


def decode_image(data: bytes, limits: ImageLimits, fit: int) -> DecodedImage:
    """Decode ``data`` (png, jpeg, webp, or a gif's first frame) and shrink it so its longest
    side is at most ``fit`` pixels (a smaller image keeps its size). Raises ImageRejected."""
    if fit < 1:
        raise ValueError(f"fit must be at least 1 pixel (got {fit})")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            ImageProblem.TOO_MANY_BYTES, f"{len(data)} bytes, the cap is {limits.max_bytes}"
        )
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageRejected(ImageProblem.DECOMPRESSION_BOMB, str(e)) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(ImageProblem.UNREADABLE, str(e) or type(e).__name__) from e
    with image:
        _check_header(image, limits)
        source_format = str(image.format)
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the target: less
        # memory and time for a phone photo.
        image.draft("RGB", (fit, fit))
        rgb = _load_rgb(image)
    rgb.thumbnail((fit, fit), Image.Resampling.LANCZOS)
    pixels = rgb.tobytes()
    digest = hashlib.sha256(b"%dx%d:" % rgb.size + pixels).hexdigest()
    return DecodedImage(rgb.width, rgb.height, pixels, source_format, digest)


def _check_header(image: Image.Image, limits: ImageLimits) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected(ImageProblem.UNREADABLE, f"empty image {width}x{height}")
    if max(width, height) > limits.max_side:
        raise ImageRejected(
            ImageProblem.HUGE_DIMENSIONS,
            f"{width}x{height}, the longest side may be {limits.max_side}",
            (width, height),
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            ImageProblem.DECOMPRESSION_BOMB,
            f"{width}x{height} is {width * height} pixels, the cap is {limits.max_pixels}",
            (width, height),
        )


def _load_rgb(image: Image.Image) -> Image.Image:
    """The first frame as RGB; transparency is laid over white (the colour chat clients show
    behind it) rather than dropped to whatever the hidden pixels hold."""
    try:
        image.seek(0)
        image.load()
        if image.mode == "RGB":
            return image.copy()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageRejected(ImageProblem.DECOMPRESSION_BOMB, str(e)) from e
    except OSError as e:
        # Pillow says "image file is truncated" (jpeg, png, webp) or fails to read past the
        # end of the data; either way the picture stops early.
        text = str(e)
        if "truncated" in text or "end of file" in text.lower():
            raise ImageRejected(ImageProblem.TRUNCATED, text) from e
        raise ImageRejected(ImageProblem.UNREADABLE, text or type(e).__name__) from e
    except (SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected(ImageProblem.UNREADABLE, str(e) or type(e).__name__) from e
