"""Image intake (bot/images.py): real pictures made with Pillow in each format, decoded and
shrunk, and each kind of bad picture refused with its problem named."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.images import (
    PILLOW_MAX_PIXELS,
    ImageLimits,
    ImageProblem,
    ImageRejected,
    decode_image,
    limits_from,
    refusal_notice,
)
from bot.model.types import DecodedImage
from bot.settings import ImageSettings

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, max_side=4096)
RED = (220, 30, 30)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def picture(size: tuple[int, int], color: tuple[int, ...] = RED, mode: str = "RGB") -> bytes:
    """A solid picture with a black stripe, so downscaling has an edge to keep."""
    image = Image.new(mode, size, color)
    image.paste((0,) * len(color), (0, 0, max(1, size[0] // 4), size[1]))
    return encode(image, "PNG")


def reencode(png: bytes, fmt: str, **options: object) -> bytes:
    return encode(Image.open(io.BytesIO(png)), fmt, **options)


def center(decoded: DecodedImage) -> tuple[int, int, int]:
    """The RGB of the pixel at the middle of the right half (the solid colour)."""
    x, y = decoded.width * 3 // 4, decoded.height // 2
    at = (y * decoded.width + x) * 3
    r, g, b = decoded.rgb[at : at + 3]
    return r, g, b


def near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in (RED, (0, 0, 255), (0, 255, 0))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return out.getvalue()


def transparent_png() -> bytes:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    return encode(image, "PNG")


PNG = picture((640, 480))


@pytest.mark.parametrize(
    ("name", "data", "fit", "size", "fmt", "color"),
    [
        ("png shrunk to the longest side", PNG, 336, (336, 252), "PNG", RED),
        ("jpeg", reencode(PNG, "JPEG", quality=90), 336, (336, 252), "JPEG", RED),
        ("webp", reencode(PNG, "WEBP", quality=90), 336, (336, 252), "WEBP", RED),
        ("portrait", picture((300, 900)), 90, (30, 90), "PNG", RED),
        ("small stays its size", picture((64, 48)), 336, (64, 48), "PNG", RED),
        ("gif: the first frame", animated_gif(), 336, (40, 30), "GIF", RED),
        ("grey", picture((50, 50), (128,), "L"), 336, (50, 50), "PNG", (128, 128, 128)),
        ("transparency over white", transparent_png(), 336, (32, 32), "PNG", (255, 255, 255)),
        ("palette", reencode(PNG, "PNG", optimize=True, bits=4), 64, (64, 48), "PNG", RED),
    ],
)
def test_decodes_and_fits(
    name: str,
    data: bytes,
    fit: int,
    size: tuple[int, int],
    fmt: str,
    color: tuple[int, int, int],
) -> None:
    decoded = decode_image(data, LIMITS, fit)
    assert (decoded.width, decoded.height) == size, name
    assert len(decoded.rgb) == decoded.width * decoded.height * 3
    assert decoded.source_format == fmt
    assert near(center(decoded), color), (name, center(decoded))


def test_a_phone_sized_jpeg_is_drafted_and_shrunk() -> None:
    # 12 MP: within the default caps; JPEG's draft mode decodes it at a fraction of the size.
    photo = reencode(picture((4000, 3000)), "JPEG", quality=80)
    limits = ImageLimits(max_bytes=len(photo), max_pixels=12_000_000, max_side=4000)
    decoded = decode_image(photo, limits, 448)
    assert (decoded.width, decoded.height) == (448, 336)
    assert near(center(decoded), RED)


def test_the_digest_is_the_content() -> None:
    a = decode_image(PNG, LIMITS, 336)
    same_pixels_other_file = decode_image(reencode(PNG, "PNG", compress_level=1), LIMITS, 336)
    other = decode_image(picture((640, 480), (0, 0, 200)), LIMITS, 336)
    assert a.digest == same_pixels_other_file.digest
    assert a.digest != other.digest
    assert len(a.digest) == 64


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def noisy_jpeg() -> bytes:
    # Noise does not compress: the cut lands in the middle of the scan data.
    image = Image.frombytes("RGB", (256, 256), bytes(range(256)) * 768)
    return encode(image, "JPEG", quality=95)


def bomb_png() -> bytes:
    # 3000 × 3000 of one colour: 9 MP (over the 4 MP cap, each side within) from a few KB.
    return encode(Image.new("L", (3000, 3000), 0), "PNG", optimize=True)


@pytest.mark.parametrize(
    ("name", "data", "limits", "problem"),
    [
        ("over the byte cap", PNG, ImageLimits(len(PNG) - 1, 4_000_000, 4096), "too_many_bytes"),
        ("empty", b"", LIMITS, "unreadable"),
        ("text", b"hello, this is not a picture", LIMITS, "unreadable"),
        ("a png's header alone", PNG[:40], LIMITS, "unreadable"),
        ("bmp is not taken", reencode(PNG, "BMP"), LIMITS, "unreadable"),
        ("truncated jpeg", truncated(noisy_jpeg()), LIMITS, "truncated"),
        ("truncated png", truncated(reencode(noisy_jpeg(), "PNG")), LIMITS, "truncated"),
        ("huge side", encode(Image.new("L", (5000, 2), 0), "PNG"), LIMITS, "huge_dimensions"),
        ("decompression bomb", bomb_png(), LIMITS, "decompression_bomb"),
    ],
)
def test_refuses(name: str, data: bytes, limits: ImageLimits, problem: str) -> None:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, limits, 336)
    assert caught.value.problem is ImageProblem(problem), (name, caught.value.detail)


def test_the_bomb_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pixel cap is read before decoding: loading the bomb would fail the test."""
    bomb = bomb_png()

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageRejected) as caught:
        decode_image(bomb, LIMITS, 336)
    assert caught.value.problem is ImageProblem.DECOMPRESSION_BOMB


def test_pillow_limit_is_set_explicitly() -> None:
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_PIXELS


def test_fit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fit"):
        decode_image(PNG, LIMITS, 0)


def test_settings_give_the_limits_and_the_notice_names_the_problem() -> None:
    limits = limits_from(ImageSettings(max_kb=2048, max_megapixels=1.5, max_side_px=1000))
    assert limits == ImageLimits(max_bytes=2 * 1024 * 1024, max_pixels=1_500_000, max_side=1000)
    notices = {}
    for data in (PNG + bytes(2 * 1024 * 1024), b"nope", truncated(noisy_jpeg()), bomb_png()):
        with pytest.raises(ImageRejected) as caught:
            decode_image(data, limits, 336)
        notices[caught.value.problem] = refusal_notice("cat.png", caught.value, limits)
    assert notices == {
        ImageProblem.TOO_MANY_BYTES: "I can't look at cat.png: it is larger than 2 MB.",
        ImageProblem.UNREADABLE: "I can't look at cat.png: it is not a PNG, JPEG, WebP or GIF "
        "image I can read.",
        ImageProblem.TRUNCATED: "I can't look at cat.png: the image is cut off (incomplete file).",
        ImageProblem.HUGE_DIMENSIONS: "I can't look at cat.png: it is too large (3000x3000 "
        "pixels).",
    }


def test_every_problem_has_a_notice() -> None:
    rejected = ImageRejected(ImageProblem.DECOMPRESSION_BOMB, "x", (9000, 9000))
    assert "9000x9000" in refusal_notice("a.gif", rejected, LIMITS)
    for problem in ImageProblem:
        assert refusal_notice("a.gif", ImageRejected(problem, "x"), LIMITS).startswith(
            "I can't look at a.gif"
        )
