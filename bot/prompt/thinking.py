"""Reasoning models write `<think>…</think>` before the answer. That is hidden by default: it
is never streamed, never stored in the history, and shown only when `[bot] show_thinking` is
on (then as a quoted block above the answer, once the answer is complete)."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkFilter:
    """Splits streamed text into thinking and answer, holding back a possible partial tag."""

    def __init__(self) -> None:
        self.answer = ""
        self.thinking = ""
        self._pending = ""
        self._inside = False

    def feed(self, text: str) -> str:
        """Add streamed text; return the answer text that may be shown now."""
        self._pending += text
        shown: list[str] = []
        while self._pending:
            tag = CLOSE if self._inside else OPEN
            at = self._pending.find(tag)
            if at >= 0:
                self._take(self._pending[:at], shown)
                self._pending = self._pending[at + len(tag) :]
                self._inside = not self._inside
                continue
            keep = _partial_suffix(self._pending, tag)
            self._take(self._pending[: len(self._pending) - keep], shown)
            self._pending = self._pending[len(self._pending) - keep :]
            break
        return "".join(shown)

    def flush(self) -> str:
        """End of the stream: a dangling partial tag is just text."""
        shown: list[str] = []
        self._take(self._pending, shown)
        self._pending = ""
        return "".join(shown)

    def _take(self, text: str, shown: list[str]) -> None:
        if self._inside:
            self.thinking += text
        else:
            self.answer += text
            shown.append(text)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def with_thinking(answer: str, thinking: str) -> str:
    thought = thinking.strip()
    if not thought:
        return answer
    quoted = "\n".join(f"> {line}" for line in thought.splitlines())
    return f"💭 thinking:\n{quoted}\n\n{answer}"
