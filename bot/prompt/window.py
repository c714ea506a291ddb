"""Rolling context: persona system prompt + history + the new message, within the token budget.

Trimming is by whole turns and in chunks: when the history no longer fits, a block of the
oldest turns is dropped at once so that the remaining prompt leaves slack for several more
turns. Between trims the window's start does not move, so consecutive prompts share their
whole prefix, which is what lets llama.cpp reuse its KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.model.types import DecodedImage

Role = Literal["system", "user", "assistant"]

# Share of the history budget left free after a trim: room for several more turns before the
# next trim changes the prompt's prefix again.
TRIM_SLACK = 1 / 3


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation as the model sees it."""

    role: Literal["user", "assistant"]
    text: str
    images: tuple[DecodedImage, ...] = ()  # shown at the start of the message, before its text


@dataclass(frozen=True, slots=True)
class Window:
    """Which turns the model sees: turns[start:]."""

    start: int
    trimmed: bool  # turns before `start` exist (whether dropped now or earlier)


@dataclass(frozen=True, slots=True)
class ContextUse:
    """What a channel's context holds now (!status): tokens in all, and its pictures'."""

    tokens: int
    images: int = 0
    image_tokens: int = 0


def speaker_text(author_name: str, text: str, multi_user: bool) -> str:
    """In a channel with several people the model needs to know who said what."""
    return f"{author_name}: {text}" if multi_user else text


def choose_window(
    costs: Sequence[int],
    is_user: Sequence[bool],
    budget: int,
    start: int = 0,
    slack: float = TRIM_SLACK,
) -> Window | None:
    """Pick the oldest turn to keep.

    costs[i] is the token cost of turn i; the last turn is the new message. `budget` is what
    the turns may use (n_ctx minus system prompt and reply reserve). `start` is the window's
    previous start: it only moves forward. Returns None when even the new message alone does
    not fit.
    """
    if not costs or costs[-1] > budget:
        return None
    last = len(costs) - 1
    start = min(max(start, 0), last)
    total = sum(costs[start:])
    if total <= budget:
        return Window(start, trimmed=start > 0)
    target = int(budget * (1 - slack))
    # Drop oldest turns until under the target, then keep going to a user turn so the window
    # never opens with an answer whose question is gone.
    while start < last and (total > target or not is_user[start]):
        total -= costs[start]
        start += 1
    return Window(start, trimmed=True)


def doomed(
    costs: Sequence[int], budget: int, start: int = 0, slack: float = TRIM_SLACK
) -> int | None:
    """The last turn that the next trim drops whatever comes before it, or None: from it on
    the turns already cost more than a trim keeps, and turns only add. What is doomed may be
    summarized ahead of the trim, so that the summary is ready when the turns leave."""
    target = int(budget * (1 - slack))
    total = sum(costs[start:])
    last = None
    for i in range(start, len(costs) - 1):
        if total <= target:
            break
        last = i
        total -= costs[i]
    return last


def turn_images(turns: Sequence[Turn]) -> dict[int, list[DecodedImage]]:
    """GenerationRequest.images for these turns after a system prompt: index into
    `chat_messages` → the pictures at the start of that message."""
    return {i + 1: list(turn.images) for i, turn in enumerate(turns) if turn.images}


def chat_messages(system_prompt: str, turns: Sequence[Turn]) -> list[dict[str, str]]:
    """The messages in the shape chat templates expect."""
    return [{"role": "system", "content": system_prompt}] + [
        {"role": turn.role, "content": turn.text} for turn in turns
    ]
