"""A picture posted where the model sees images: downloaded from Discord (the fake serves a
real PNG on 127.0.0.1) with the byte cap, decoded and shrunk off the event loop, stored in
data_dir/images (owner only) with its message while that is in the context window, and
deleted with `!forget`, a deletion, retention, `!reset` and a trim. A bad picture gets its
notice and nothing else happens. Through real discord.py and the real daemon; until an engine
evaluates images, the tiny model's backend is said to see them (its ModelInfo), which is all
the intake asks."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from bot import texts
from bot.daemon import Daemon
from bot.image_store import IMAGES_DIR
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord, until

SIDE = 32  # the side the "projector" asks pictures to be shrunk to


def png(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def sees_images(daemon: Daemon, image_tokens: int = 4) -> None:
    info = daemon.backend.info
    daemon.backend.info = dataclasses.replace(  # type: ignore[misc]
        info, sees_images=True, image_tokens=image_tokens, image_side_px=SIDE
    )


def stored_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / IMAGES_DIR
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_picture_is_downloaded_stored_privately_and_forgotten(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        sees_images(daemon)
        cat = fake.attachment("cat.png", png(), "image/png")
        asked = await fake.say(
            fake.alice, fake.general, f"{at(fake)} what is this?", attachments=[cat]
        )
        shown = await answer(fake, daemon, asked)
        assert texts.NOTE_CANNOT_SEE_IMAGES not in shown
        assert fake.downloaded == ["cat.png"]
        (file,) = stored_files(tmp_path)
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
        assert file.stat().st_size == SIDE * 24 * 3  # 64x48 shrunk to fit 32: 32x24 RGB
        channel = f"discord:{fake.general['id']}"
        (user, _answer) = await daemon.store.history(channel)
        assert user.text == "what is this?\n\n[image: cat.png]"
        (picture,) = (await daemon.store.pictures_of([user.row]))[user.row]
        assert (picture.name, picture.width, picture.height) == ("cat.png", 32, 24)
        assert file.name == f"{picture.digest}.rgb"
        # Bob posts the same picture: one file, two links; Alice's !forget keeps Bob's.
        again = await fake.say(fake.bob, fake.general, f"{at(fake)} mine too", attachments=[cat])
        await answer(fake, daemon, again)
        assert stored_files(tmp_path) == [file]
        forget = await fake.say(fake.alice, fake.general, f"{at(fake)} !forget")
        await answer(fake, daemon, forget)
        assert stored_files(tmp_path) == [file]
        forget = await fake.say(fake.bob, fake.general, f"{at(fake)} !forget")
        await answer(fake, daemon, forget)
        assert stored_files(tmp_path) == []


async def test_a_deleted_message_takes_its_picture(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        sees_images(daemon)
        cat = fake.attachment("cat.png", png(), "image/png")
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} look", attachments=[cat])
        await answer(fake, daemon, asked)
        assert len(stored_files(tmp_path)) == 1
        await fake.user_delete(asked)
        await until(lambda: stored_files(tmp_path) == [], what="the picture deleted")


@pytest.mark.parametrize(
    ("filename", "body", "notice"),
    [
        (
            "big.png",
            png(400, 400, noise=True),
            "I can't look at big.png: it is larger than 0.1 MB.",
        ),
        ("fake.png", b"not a picture", "I can't look at fake.png: it is not a PNG, JPEG, WebP"),
        (
            "cut.png",
            png(64, 64, noise=True)[:2000],
            "I can't look at cut.png: the image is cut off",
        ),
        ("wide.png", png(4000, 2), "I can't look at wide.png: it is too large (4000x2 pixels)."),
        (
            "bomb.png",
            png(1000, 1000),
            "I can't look at bomb.png: it has too many pixels (1000x1000).",
        ),
    ],
)
async def test_a_bad_picture_gets_its_notice_and_nothing_else(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, filename: str, body: bytes, notice: str
) -> None:
    """Each kind of bad picture (the decode's table tests are in test_images.py): the notice
    is the whole answer, the message is not stored, and the daemon goes on."""
    caps = {"max_kb": 100, "max_side_px": 2048, "max_megapixels": 0.5}
    async with hearthbot(tmp_path, tiny_model, fake, images=caps) as (daemon, _adapter):
        sees_images(daemon)
        bad = fake.attachment(filename, body, "image/png")
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} look", attachments=[bad])
        assert (await answer(fake, daemon, asked)).startswith(notice)
        assert await daemon.store.history(f"discord:{fake.general['id']}") == []
        assert await daemon.store.pending() == []
        assert stored_files(tmp_path) == []
        # Over the cap by its declared size: not even downloaded.
        assert fake.downloaded == ([] if filename == "big.png" else [filename])
        # The daemon goes on: a plain question is answered.
        fine = await fake.say(fake.alice, fake.general, f"{at(fake)} hello")
        assert await answer(fake, daemon, fine)
