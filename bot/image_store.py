"""The pictures a model that sees images was shown, kept in data_dir/images while their
message is in its channel's context window, and nowhere else.

Each picture is stored decoded (bot.images: RGB rows, already shrunk to the projector's side)
as `<content hash>.rgb`, owner-only, and linked to its message by a row of the `images` table.
The rows go with their message however it goes (`!forget`, a deletion or redaction, `!reset`,
retention: the foreign key cascades) and when the window's start passes it; a file goes once
no row names it (`sweep_images`, after every deletion, under the store's write lock so that
a picture being linked is never swept). A picture posted twice is one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.database import Database
from bot.model.types import DecodedImage
from bot.private_files import private_dir

IMAGES_DIR = "images"
SUFFIX = ".rgb"


@dataclass(frozen=True, slots=True)
class Picture:
    """A posted picture taken with its message: its file name as posted, and the bitmap
    (bot.images makes it)."""

    name: str
    image: DecodedImage


@dataclass(frozen=True, slots=True)
class StoredPicture:
    """A picture linked to a message: its name as posted and its decoded file's facts."""

    name: str
    digest: str
    width: int
    height: int
    source_format: str


def load_picture(folder: Path, picture: StoredPicture) -> DecodedImage | None:
    """The stored bitmap (blocking: run it off the event loop); None when its file is gone
    or is not the picture its hash names (a disk error, someone's edit)."""
    try:
        rgb = (folder / f"{picture.digest}{SUFFIX}").read_bytes()
    except OSError:
        return None
    size = b"%dx%d:" % (picture.width, picture.height)
    if len(rgb) != picture.width * picture.height * 3:
        return None
    if hashlib.sha256(size + rgb).hexdigest() != picture.digest:
        return None
    return DecodedImage(picture.width, picture.height, rgb, picture.source_format, picture.digest)


def _write_private(folder: Path, image: DecodedImage) -> None:
    """The bitmap as `<digest>.rgb`, owner-only, written whole or not at all."""
    private_dir(folder)
    final = folder / f"{image.digest}{SUFFIX}"
    if final.exists():
        return
    temporary = folder / f"{image.digest}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(image.rgb)
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(temporary, final)


def link_pictures(db: sqlite3.Connection, row: int, pictures: Sequence[Picture]) -> None:
    """In the transaction that stores message `row`: its pictures' rows (their files are
    written first, ImageStore.write_pictures)."""
    db.executemany(
        "INSERT INTO images (message_row, position, name, digest, width, height,"
        " source_format) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (row, i, p.name, p.image.digest, p.image.width, p.image.height, p.image.source_format)
            for i, p in enumerate(pictures)
        ],
    )


class ImageStore(Database):
    """The images table and its files, part of bot.store.Store (one connection, one write
    path)."""

    @property
    def images_dir(self) -> Path | None:
        """Where the pictures are: data_dir/images (None: a store without a folder)."""
        return self.path.parent / IMAGES_DIR if self.path is not None else None

    async def write_pictures(self, pictures: Sequence[Picture]) -> None:
        """The pictures' files, before the transaction that links them (`link_pictures`),
        under the same hold of the write lock, so no sweep runs in between."""
        folder = self.images_dir
        if folder is None:
            return
        for picture in pictures:
            await asyncio.to_thread(_write_private, folder, picture.image)

    async def pictures_of(self, rows: Sequence[int]) -> dict[int, list[StoredPicture]]:
        """Message row → its pictures in the order posted (rows without any are left out)."""
        if not rows:
            return {}
        found: dict[int, list[StoredPicture]] = {}
        for start in range(0, len(rows), 500):  # SQLite's variable limit, with room to spare
            chunk = rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in await self._read(
                "SELECT message_row, name, digest, width, height, source_format FROM images"
                f" WHERE message_row IN ({marks}) ORDER BY message_row, position",
                tuple(chunk),
            ):
                found.setdefault(int(r[0]), []).append(StoredPicture(*r[1:]))
        return found

    async def unlink_before(self, db: aiosqlite.Connection, channel: str, first_row: int) -> int:
        """In a transaction: the pictures of the channel's messages before `first_row` (the
        window's start passed them) are unlinked; how many. Their files go at the sweep."""
        cur = await db.execute(
            "DELETE FROM images WHERE message_row IN"
            " (SELECT id FROM messages WHERE channel = ? AND id < ?)",
            (channel, first_row),
        )
        return cur.rowcount

    async def sweep_images(self) -> int:
        """Delete the files no row names any more (and half-written ones); how many."""
        folder = self.images_dir
        if folder is None or not folder.is_dir():
            return 0
        async with self._write_lock:  # a picture is written and linked under it
            named = {str(r[0]) for r in await self._read("SELECT DISTINCT digest FROM images")}
            return await asyncio.to_thread(_delete_unnamed, folder, named)

    async def _scrub(self) -> None:
        """After deleting text: also the files of pictures whose messages went."""
        await super()._scrub()
        await self.sweep_images()

    async def _opened(self) -> None:
        """At start: files a crash left unlinked go."""
        await super()._opened()
        await self.sweep_images()


def _delete_unnamed(folder: Path, named: set[str]) -> int:
    deleted = 0
    for path in folder.iterdir():
        if path.suffix == SUFFIX and path.stem in named:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
    return deleted
