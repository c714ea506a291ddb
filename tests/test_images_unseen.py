"""A picture posted where the model cannot see images (no projector): the answer comes, with a
short note that this model cannot see images, once per channel per hour. Through real
discord.py, the fake Discord (a real PNG attachment, served on 127.0.0.1) and the real daemon.
Also the pieces: which attachments are pictures, and the once-per-interval gate."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from adapters.discord.text import is_image_attachment
from bot import texts
from bot.answering import shown_answer
from bot.events import Incoming
from bot.images import BLIND_NOTICE_INTERVAL_S, OncePer
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord

NOTE = texts.NOTE_CANNOT_SEE_IMAGES


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_a_picture_gets_the_note_once_per_channel(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake) as (daemon, _adapter):
        assert not daemon.backend.info.sees_images
        cat = fake.attachment("cat.png", png(), "image/png")
        first = await fake.say(
            fake.alice, fake.general, f"{at(fake)} what is this?", attachments=[cat]
        )
        shown = await answer(fake, daemon, first)
        assert NOTE in shown  # answered, and told
        again = await fake.say(fake.bob, fake.general, f"{at(fake)} and this?", attachments=[cat])
        assert NOTE not in await answer(fake, daemon, again)  # within the hour: once
        text_only = await fake.say(fake.alice, fake.other, f"{at(fake)} hello")
        assert NOTE not in await answer(fake, daemon, text_only)
        elsewhere = await fake.say(fake.alice, fake.other, f"{at(fake)} look", attachments=[cat])
        assert NOTE in await answer(fake, daemon, elsewhere)  # another channel hears it too
        assert fake.downloaded == []  # a model that cannot see them: pictures stay unread
        # A text file is no picture.
        notes = fake.attachment("notes.txt", b"the cat is red", "text/plain")
        read = await fake.say(fake.alice, fake.thread, f"{at(fake)} read this", attachments=[notes])
        assert NOTE not in await answer(fake, daemon, read)


@pytest.mark.parametrize(
    ("filename", "content_type", "picture"),
    [
        ("cat.png", "image/png", True),
        ("photo.JPG", "image/jpeg", True),
        ("x.webp", "image/webp; charset=binary", True),
        ("anim.gif", "image/gif", True),
        ("scan.tiff", "image/tiff", False),
        ("icon.svg", "image/svg+xml", False),
        ("cat.png", "text/plain", False),  # the type Discord says wins
        ("cat.jpeg", None, True),  # no type given: the extension
        ("notes.txt", None, False),
        ("png", None, False),
    ],
)
def test_which_attachments_are_pictures(
    filename: str, content_type: str | None, picture: bool
) -> None:
    assert is_image_attachment(filename, content_type) is picture


def test_once_per_interval_per_key() -> None:
    now = [1000.0]
    gate = OncePer(BLIND_NOTICE_INTERVAL_S, clock=lambda: now[0], most_keys=2)
    assert BLIND_NOTICE_INTERVAL_S == 3600
    assert gate.due("a") and not gate.due("a")
    assert gate.due("b")
    now[0] += 3599
    assert not gate.due("a")
    now[0] += 1
    assert gate.due("a") and not gate.due("a")
    assert gate.due("c")  # a third key: the oldest ("b") is forgotten
    assert gate.due("b")


def test_the_note_follows_the_answer() -> None:
    shown = shown_answer("A red square.", cut_at=None, kept=None, blind=True)
    assert shown == f"A red square.\n\n⚠️ ({NOTE})"
    assert shown_answer("x", cut_at=None, kept=None) == "x"


def test_the_pictures_survive_the_pending_row() -> None:
    message = Incoming("discord", "1", "2", "3", "alice", "hi", images=("a.png", "b.gif"))
    assert Incoming.from_json(message.to_json()) == message
    old = message.to_json().replace(', "images": ["a.png", "b.gif"]', "")
    assert Incoming.from_json(old).images == ()  # a row stored before images existed
