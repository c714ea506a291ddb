"""A picture posted where the model sees images: downloaded from Discord (the fake serves a
real PNG on 127.0.0.1) with the byte cap, decoded and shrunk off the event loop, stored in
data_dir/images (owner only) with its message while that is in the context window, and
deleted with `!forget`, a deletion, retention, `!reset` and a trim. A bad picture gets its
notice and nothing else happens. Through real discord.py, the real daemon and the tiny model
with its tiny projector (real libmtmd): the pictures reach a model that sees them."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from bot import texts
from bot.daemon import Daemon
from bot.image_store import IMAGES_DIR, load_picture
from bot.model.types import Generation, GenerationRequest
from bot.prompt.builder import Prompt
from support.discord_bot import answer, at, hearthbot
from support.fake_discord import FakeDiscord, until
from support.tinyprojector import IMAGE_SIZE, IMAGE_TOKENS

SIDE = IMAGE_SIZE  # the side the projector asks pictures to be shrunk to


def png(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def stored_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / IMAGES_DIR
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_picture_is_downloaded_stored_privately_and_forgotten(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
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


async def test_each_format_is_taken(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    """PNG, JPEG, WebP and a GIF's first frame, posted together: four pictures stored."""
    frames = [Image.new("RGB", (40, 30), c) for c in ((0, 200, 0), (0, 0, 200))]
    bodies = {}
    for name, kind in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP")):
        out = io.BytesIO()
        frames[0].save(out, kind)
        bodies[name] = out.getvalue()
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    bodies["d.gif"] = out.getvalue()
    async with hearthbot(tmp_path, tiny_model, fake, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
        kinds = ("image/png", "image/jpeg", "image/webp", "image/gif")
        files = [fake.attachment(n, b, k) for (n, b), k in zip(bodies.items(), kinds, strict=True)]
        asked = await fake.say(fake.alice, fake.general, f"{at(fake)} four", attachments=files)
        await answer(fake, daemon, asked)
        (user, _answer) = await daemon.store.history(f"discord:{fake.general['id']}")
        stored = (await daemon.store.pictures_of([user.row]))[user.row]
        assert [(p.name, p.source_format) for p in stored] == [
            ("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP"), ("d.gif", "GIF")
        ]  # fmt: skip
        assert {(p.width, p.height) for p in stored} == {(32, 24)}
        # One file per distinct bitmap (the lossless ones are the same picture).
        assert len(stored_files(tmp_path)) == len({p.digest for p in stored})
        gif = load_picture(tmp_path / IMAGES_DIR, stored[3])
        assert gif is not None and gif.rgb[:3] == bytes((0, 200, 0))  # the first frame


async def test_a_deleted_message_takes_its_picture(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
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
    tmp_path: Path,
    tiny_model: Path,
    fake: FakeDiscord,
    tiny_projector: Path,
    filename: str,
    body: bytes,
    notice: str,
) -> None:
    """Each kind of bad picture (the decode's table tests are in test_images.py): the notice
    is the whole answer, the message is not stored, and the daemon goes on."""
    caps = {"max_kb": 100, "max_side_px": 2048, "max_megapixels": 0.5}
    async with hearthbot(tmp_path, tiny_model, fake, images=caps, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
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


def record_requests(daemon: Daemon) -> list[GenerationRequest]:
    """Every request the daemon starts, as the engine gets it."""
    started: list[GenerationRequest] = []
    start = daemon.backend.start

    def recording(request: GenerationRequest) -> Generation:
        started.append(request)
        return start(request)

    daemon.backend.start = recording  # type: ignore[method-assign]
    return started


async def test_the_newest_pictures_reach_the_model_older_ones_as_placeholders(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
        requests = record_requests(daemon)
        colours = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255)}
        for name, colour in colours.items():
            body = io.BytesIO()
            Image.new("RGB", (8, 8), colour).save(body, "PNG")
            sent = fake.attachment(name, body.getvalue(), "image/png")
            asked = await fake.say(fake.alice, fake.general, f"{at(fake)} and {name}?",
                                   attachments=[sent])  # fmt: skip
            await answer(fake, daemon, asked)
        last = requests[-1]
        users = [i for i, m in enumerate(last.messages) if m["role"] == "user"]
        assert len(users) == 3
        # The newest two (the default cap), each at the start of its own message.
        assert sorted(last.images) == users[1:]
        shown = [last.images[i][0] for i in users[1:]]
        assert [image.rgb[:3] for image in shown] == [bytes((0, 255, 0)), bytes((0, 0, 255))]
        assert (shown[0].width, shown[0].height) == (8, 8)  # smaller than the side: kept
        # The oldest left as its placeholder; its text stays.
        assert last.messages[users[0]]["content"].endswith("and red.png?\n\n[image: red.png]")
        assert requests[0].images == {users[0]: [requests[0].images[users[0]][0]]}
        # The window counts the projector's 16 tokens per picture shown, and !status says so.
        prompt = await daemon.context.build(
            f"discord:{fake.general['id']}", "sys", reserve=40, multi_user=False,
            through_row=10**9,
        )  # fmt: skip
        assert isinstance(prompt, Prompt)
        assert prompt.image_tokens == 2 * IMAGE_TOKENS and len(prompt.images) == 2
        status = await fake.say(fake.alice, fake.general, f"{at(fake)} !status")
        assert f", of which 2 images: {2 * IMAGE_TOKENS} tokens" in await answer(
            fake, daemon, status
        )


async def test_a_picture_trimmed_out_of_the_window_is_deleted(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    async with hearthbot(tmp_path, tiny_model, fake, n_ctx=512, mmproj=tiny_projector) as (
        daemon,
        _adapter,
    ):
        channel = f"discord:{fake.general['id']}"
        first: Path | None = None
        for n in range(12):
            body = io.BytesIO()
            Image.new("RGB", (8, 8), (n * 20, 0, 0)).save(body, "PNG")
            sent = fake.attachment(f"p{n}.png", body.getvalue(), "image/png")
            asked = await fake.say(fake.alice, fake.general, f"{at(fake)} picture {n}",
                                   attachments=[sent])  # fmt: skip
            await answer(fake, daemon, asked)
            if first is None:
                (first,) = stored_files(tmp_path)
            history = await daemon.store.history(channel)
            if history[0].text != "picture 0\n\n[image: p0.png]":
                break
        else:
            raise AssertionError("the window never trimmed")
        assert first not in stored_files(tmp_path)
        rows = [m.row for m in history]
        assert len(stored_files(tmp_path)) == len(await daemon.store.pictures_of(rows)) > 0


async def test_a_picture_posted_while_stopping_is_kept_and_seen_after_the_restart(
    tmp_path: Path, tiny_model: Path, fake: FakeDiscord, tiny_projector: Path
) -> None:
    """A message that arrives while the daemon stops is saved as pending and answered after
    the restart: its picture is kept with it (it used to be saved without), and seen then."""
    channel = f"discord:{fake.other['id']}"
    bot = {"shutdown_grace_s": 60}
    async with hearthbot(tmp_path, tiny_model, fake, chatty_tokens=3000, n_ctx=4096, bot=bot,
                         mmproj=tiny_projector) as (daemon, _adapter):  # fmt: skip
        long = await fake.say(fake.alice, fake.general, f"{at(fake)} a long story, please")
        await until(lambda: bool(fake.replies_to(long)), what="the long answer streaming")
        stopping = asyncio.create_task(daemon.stop())  # waits for the long answer
        await until(lambda: daemon.live.stopping, what="stopping")
        cat = fake.attachment("cat.png", png(), "image/png")
        late = await fake.say(fake.bob, fake.other, f"{at(fake)} and this?", attachments=[cat])

        async def saved() -> list[int]:
            pending = await daemon.store.pending()
            return [p.row for p in pending if p.message.message_id == late["id"]]

        async with asyncio.timeout(20):
            while not (rows := await saved()):  # noqa: ASYNC110 (saved by the intake)
                await asyncio.sleep(0.01)
        async with daemon.store.transaction():  # reads share its connection: let it commit
            pass
        (picture,) = (await daemon.store.pictures_of(rows))[rows[0]]
        assert picture.name == "cat.png" and len(stored_files(tmp_path)) == 1
        daemon.abandon()
        await stopping
    assert not fake.replies_to(late)
    async with hearthbot(tmp_path, tiny_model, fake, mmproj=tiny_projector) as (daemon, _):
        await answer(fake, daemon, late)
        assert len(fake.replies_to(late)) == 1
        prompt = await daemon.context.build(
            channel, "sys", reserve=40, multi_user=False, through_row=10**9
        )
        assert isinstance(prompt, Prompt) and len(prompt.images) == 1
