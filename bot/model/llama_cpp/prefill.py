"""Which prompts a step reads, and how much of each: shortest first; whole prompts share a step
while they fit; a chunk of a prompt the step cannot finish only in a step that finishes none.

So a short question admitted behind a long pasted text gets its first token after its own
reading, not after the text's chunks, and the text loses one step. A burst of follow-ups is
read in one step, as llama-server reads it: reading them one per step gave the median first
token sooner but the last one later and the burst's tokens/s 10–17 % lower on a 2-core CPU
(docs/performance.md, "Side by side with llama-server").
"""

from __future__ import annotations

from collections.abc import Sequence


def prompt_parts(remaining: Sequence[int], ready: Sequence[int], budget: int) -> list[int]:
    """How many prompt tokens each reply still being read evaluates in this step.

    `remaining[i]` is what is left of reply i's prompt, `ready[i]` how much of it may go in one
    step now (less at a cut or before a picture), `budget` the step's room for prompt tokens.
    """
    parts = [0] * len(remaining)
    finishes = False  # the step gives some reply its first token
    for i in sorted((i for i in range(len(remaining)) if ready[i] > 0), key=lambda i: remaining[i]):
        part = min(ready[i], budget)
        if part <= 0:
            break
        whole = part == remaining[i]
        if finishes and not whole:
            continue  # its chunk would delay others' first tokens: the next step takes it
        parts[i] = part
        budget -= part
        finishes |= whole
    return parts
