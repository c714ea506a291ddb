"""Splitting long answers into platform-sized messages.

A split never breaks a code block: a chunk that ends inside a fence closes it, and the next
chunk reopens it with the same language. Cuts prefer paragraph, then line, then sentence,
then word boundaries.
"""

from __future__ import annotations

FENCE = "```"
_CLOSE = "\n" + FENCE
_MIN_LIMIT = 40


def fence_state(text: str, state: str | None = None) -> str | None:
    """The language of the code block open at the end of `text` ('' for a plain fence), or
    None when no block is open. `state` is the block open before `text`."""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            # The language tag is capped so that reopening a block always leaves room.
            state = None if state is not None else stripped[len(FENCE) :].strip()[:20]
    return state


def _cut_at(text: str, room: int) -> int:
    """Where to cut `text` so the first part fits in `room` characters."""
    window = text[:room]
    for separator, keep_from in (("\n\n", room // 2), ("\n", room // 3), (". ", room // 3)):
        at = window.rfind(separator)
        if at >= keep_from:
            return at + len(separator)
    at = window.rfind(" ")
    return at + 1 if at >= room // 4 else room


def split_message(text: str, limit: int) -> list[str]:
    """Split `text` into chunks of at most `limit` characters."""
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}")
    chunks: list[str] = []
    state: str | None = None
    rest = text
    while rest:
        opening = f"{FENCE}{state}\n" if state is not None else ""
        if len(opening) + len(rest) <= limit:
            chunks.append(opening + rest)
            break
        room = limit - len(opening) - len(_CLOSE)
        cut = _cut_at(rest, room)
        # Never cut inside a fence line (the rest of its tag would become code): cut before it.
        line_start = rest.rfind("\n", 0, cut) + 1
        line = rest[line_start:].split("\n", 1)[0]
        if 0 < line_start < cut < line_start + len(line) and line.strip().startswith(FENCE):
            cut = line_start
        piece = rest[:cut]
        rest = rest[len(piece) :]
        state = fence_state(piece, state)
        closing = _CLOSE if state is not None else ""
        chunk = (opening + piece.rstrip("\n") + closing) if closing else opening + piece
        chunks.append(chunk.rstrip() or chunk)
        if state is not None:
            rest = rest.lstrip("\n")
    return [chunk for chunk in chunks if chunk.strip()]
