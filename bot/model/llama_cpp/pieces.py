"""How a fixed-seed prompt is cut into batches, so that a warm turn computes exactly what a cold
one would.

Measured (issue #14), and probed on the loaded model before it is relied on: evaluating a prompt
in batches whose boundaries fall on multiples of ALIGN tokens, each at least MIN_PIECE tokens,
gives bit-identical logits wherever those boundaries fall; single-token decodes and short
batches do not. So a fixed-seed channel keeps the part of its previous prompt that was
evaluated that way (not the reply: it was decoded a token at a time) and evaluates the rest
that way too, instead of the whole conversation every turn.
"""

from __future__ import annotations

ALIGN = 4
MIN_PIECE = 36


def can_cut(step: int) -> bool:
    """Whether batches of at most `step` tokens leave room for the rule."""
    return step >= 2 * MIN_PIECE + ALIGN


def align_down(n: int) -> int:
    return n - n % ALIGN


def cuts(start: int, end: int, step: int) -> list[int]:
    """Where the batches evaluating prompt positions [start, end) end: each at most `step`
    tokens, every boundary a multiple of ALIGN, every batch at least MIN_PIECE tokens (unless
    the whole range is shorter). `start` is a multiple of ALIGN; see can_cut for `step`."""
    ends = []
    at = start
    while end - at > step:
        cut = align_down(at + step)
        if end - cut < MIN_PIECE:
            cut = align_down(end - MIN_PIECE)  # the last batch gets its minimum
        ends.append(cut)
        at = cut
    ends.append(end)
    return ends


def reuse_point(kept: int, end: int) -> int:
    """How much of a prefix evaluated by the rule (`kept` tokens that the new prompt shares) a
    prompt of `end` tokens reuses: a multiple of ALIGN that leaves at least MIN_PIECE tokens to
    evaluate (the last batch gives the logits of the reply's first token)."""
    return max(0, align_down(min(kept, end - MIN_PIECE)))
