"""Which pictures a prompt shows: the newest `[images] max_images_in_context` of the history,
each at the start of its message; an older one leaves the prompt as a short placeholder in its
turn's text ("[image: photo.jpg]") while the text stays. Pure functions (table tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from bot.history import StoredMessage
from bot.image_store import ImageStore, load_picture
from bot.model.types import DecodedImage
from bot.texts import IMAGE_PLACEHOLDER


@dataclass(frozen=True, slots=True)
class TurnPictures:
    """A message's pictures in a prompt: those shown (loaded), the names of the others."""

    shown: tuple[DecodedImage, ...] = ()
    hidden: tuple[str, ...] = ()


def shown_counts(counts: Sequence[int], most: int) -> list[int]:
    """How many of each turn's pictures (`counts`, oldest turn first) are shown: the newest
    `most` of all, counting from the last turn back; within a turn, its first ones (they were
    posted together)."""
    shown = [0] * len(counts)
    left = max(most, 0)
    for i in range(len(counts) - 1, -1, -1):
        if left == 0:
            break
        shown[i] = min(counts[i], left)
        left -= shown[i]
    return shown


def with_placeholders(text: str, names: Sequence[str]) -> str:
    """The turn's text naming each picture not shown. Adapters name a picture in its
    message's text already (the placeholder is how they name one): such a name is not added
    twice; one the text lacks (an edit took it out) is added after the text."""
    missing = []
    for name in names:
        placeholder = IMAGE_PLACEHOLDER.format(name=name)
        if placeholder not in text and placeholder not in missing:
            missing.append(placeholder)
    return "\n".join(part for part in (text, *missing) if part)


async def read_pictures(
    store: ImageStore, history: Sequence[StoredMessage], most: int
) -> dict[int, TurnPictures]:
    """Row → the message's pictures: the newest `most` of the history shown (read from
    data_dir/images), the others named only (a file that is gone or changed too). Nothing is
    read while the model sees none (`most` 0): the text names its pictures already, and a
    read per message is what the daemon's overhead is made of."""
    if most <= 0:
        return {}
    stored = await store.pictures_of([m.row for m in history if m.role == "user"])
    folder = store.images_dir
    if not stored or folder is None:
        return {}
    counts = [len(stored.get(m.row, ())) for m in history]
    found = {}
    for m, n in zip(history, shown_counts(counts, most), strict=True):
        if m.row not in stored:
            continue
        loaded = [await asyncio.to_thread(load_picture, folder, p) for p in stored[m.row][:n]]
        shown = tuple(image for image in loaded if image is not None)
        hidden = [p.name for p, image in zip(stored[m.row], loaded, strict=False) if image is None]
        hidden += [p.name for p in stored[m.row][n:]]
        found[m.row] = TurnPictures(shown, tuple(hidden))
    return found
