"""The pictures' files in data_dir/images: written owner-only with their message, read back as
the bitmap they were, and gone with every way a message goes (retention, `!reset`, a trim of
the context window, a message that cannot fit, a crash before the link was written). The
Discord path (`!forget`, a deletion) is in test_images_seen.py. A real SQLite store."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from bot.events import Incoming
from bot.image_store import IMAGES_DIR, Picture, load_picture
from bot.images import ImageLimits, decode_image
from bot.migrations import MIGRATIONS
from bot.store import Store

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 22, max_side=4096)
CHANNEL = "discord:1"


def picture(name: str, colour: tuple[int, int, int]) -> Picture:
    out = io.BytesIO()
    Image.new("RGB", (40, 20), colour).save(out, "PNG")
    return Picture(name, decode_image(out.getvalue(), LIMITS, fit=16))


def message(n: int, author: str = "alice") -> Incoming:
    return Incoming("discord", "1", f"m{n}", author, author, f"text {n}", images=("a.png",))


def files(tmp_path: Path) -> list[str]:
    folder = tmp_path / IMAGES_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_stored_read_back_and_each_way_of_going(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "hearthbot.db")
    try:
        red, blue, green = (picture(n, c) for n, c in
                            [("red.png", (255, 0, 0)), ("blue.png", (0, 0, 255)),
                             ("green.png", (0, 255, 0))])  # fmt: skip
        first = await store.accept(message(1), "text 1", pictures=[red, blue])
        second = await store.accept(message(2), "text 2", pictures=[green])
        assert first is not None and second is not None
        assert files(tmp_path) == sorted(f"{p.image.digest}.rgb" for p in (red, blue, green))
        found = await store.pictures_of([first, second])
        assert [p.name for p in found[first]] == ["red.png", "blue.png"]
        assert load_picture(tmp_path / IMAGES_DIR, found[first][0]) == red.image
        # A trim: the window's start passes the first message, its pictures go.
        await store.set_window_start(CHANNEL, second)
        assert files(tmp_path) == [f"{green.image.digest}.rgb"]
        assert await store.pictures_of([first]) == {}
        # Retention.
        third = await store.accept(message(3), "text 3", pictures=[red])
        assert third is not None
        await store.drop_pending(second, third)
        await store.purge(before=time.time() + 60)
        assert files(tmp_path) == []
        # !reset.
        fourth = await store.accept(message(4), "text 4", pictures=[blue])
        assert fourth is not None and len(files(tmp_path)) == 1
        await store.drop_pending(fourth)
        await store.reset_channel(CHANNEL)
        assert files(tmp_path) == []
        # A message that can never fit is discarded.
        fifth = await store.accept(message(5), "text 5", pictures=[green])
        assert fifth is not None and len(files(tmp_path)) == 1
        await store.discard(fifth)
        assert files(tmp_path) == []
    finally:
        await store.close()


async def test_a_changed_or_missing_file_is_not_shown(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "hearthbot.db")
    try:
        red = picture("red.png", (255, 0, 0))
        row = await store.accept(message(1), "text 1", pictures=[red])
        assert row is not None
        (stored,) = (await store.pictures_of([row]))[row]
        path = tmp_path / IMAGES_DIR / f"{red.image.digest}.rgb"
        path.write_bytes(b"\x00" * len(red.image.rgb))  # same size, other pixels
        assert load_picture(tmp_path / IMAGES_DIR, stored) is None
        path.unlink()
        assert load_picture(tmp_path / IMAGES_DIR, stored) is None
    finally:
        await store.close()


async def test_files_a_crash_left_unlinked_go_at_start(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "hearthbot.db")
    red = picture("red.png", (255, 0, 0))
    row = await store.accept(message(1), "text 1", pictures=[red])
    await store.close()
    folder = tmp_path / IMAGES_DIR
    (folder / ("0" * 64 + ".rgb")).write_bytes(b"left over")
    (folder / "half.tmp").write_bytes(b"half written")
    store = await Store.open(tmp_path / "hearthbot.db")
    try:
        assert files(tmp_path) == [f"{red.image.digest}.rgb"]
        assert row in await store.pictures_of([row])
        rows = await store.read("PRAGMA user_version")
        assert rows[0][0] == len(MIGRATIONS)
    finally:
        await store.close()
