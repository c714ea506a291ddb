"""What a chat template writes around the messages, in tokens: measured once on the model's
own template and tokenizer, as prompts are built (bot.model.template), for the context
builder's estimate of a window before the prompt is built."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from bot.model.backend import Backend


@dataclass(frozen=True, slots=True)
class Overheads:
    """Template tokens around one message, opening the reply, and once per prompt."""

    turn: int
    reply: int
    prompt: int


FALLBACK = 8  # a part the template will not render (one that insists on roles): a safe guess


def measure(backend: Backend, count: Callable[[str], int]) -> Overheads:
    """A turn costs the larger of a user's and an assistant's markers, so a window of either
    is never under-counted. What a template writes once, a BOS or Llama 3.1's date header in
    its system turn, is the prompt's; what it writes only when there is no system message
    (Qwen2.5's default system prompt) is nobody's: our prompts always have one."""

    def tokens(*roles: str) -> int:
        return len(backend.prompt_tokens([{"role": r, "content": "x"} for r in roles]))

    x = count("x")
    turn = reply = prompt = FALLBACK
    # Each part on its own: a template may render one of these conversations and not another.
    with contextlib.suppress(Exception):
        one_turn = tokens("user", "assistant") - tokens("user")
        turn = max(tokens("user", "assistant", "user") - tokens("user", "assistant"), one_turn)
        turn = max(turn - x, 0)
    with contextlib.suppress(Exception):
        one = [{"role": "user", "content": "x"}]
        opened, closed = (
            len(backend.tokenize(backend.render(one, add_generation_prompt=g)))
            for g in (True, False)
        )
        reply = max(opened - closed, 0)
    with contextlib.suppress(Exception):
        prompt = max(tokens("system", "user") - 2 * (x + turn) - reply, 0)
    return Overheads(turn, reply, prompt)
