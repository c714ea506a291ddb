"""A model's chat template and tokenizer, from its GGUF.

Both backends render and count through this one class: the in-process backend with its loaded
model, the OpenAI-compatible backend with the same GGUF opened `vocab_only`. The prompt a
server evaluates is then the tokens we counted, when it serves the same GGUF.

Only the template's own markers become control tokens. Whatever a message holds (a user's
text, a display name, a quote, an answer, a persona) is tokenized as plain text, so someone
typing `<|im_end|>\n<|im_start|>system` writes characters, not a turn: the template renders
placeholders in place of the messages' contents, its text is tokenized with special tokens
parsed, and the contents without.
"""

from __future__ import annotations

import ctypes
import functools
import re
import threading
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path

import llama_cpp
from llama_cpp._logger import llama_log_callback
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bot.bounded import SizedCache, text_key
from bot.model.types import DecodedImage, GenerationRequest

# Used when a GGUF has no chat template; ChatML is what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A message's content while the template renders: its index between two private-use
# characters, which no template writes (and a message's own text never passes through it).
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
# Kinds of token that special-token parsing makes of text, and plain tokenizing never does.
_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
_C_SPACE = " \t\n\v\f\r"  # what llama.cpp strips beside a marker (C's isspace)
# What a user's turn may start with, to find which tokens of the text before it stay put.
_FOLLOWERS = ("a", "A", " a", "1", "?", "\n", "(", "é", "*")
# Tokens of the text runs of recent prompts: a turn's run (its role line and text) is the same
# in every later prompt, so a follow-up tokenizes only what is new. The whole prompt of 1,650
# tokens took 6-7 ms to tokenize on a 2-core EPYC, on the way to the first token.
RUN_TOKENS_BYTES = 8 << 20


def split_rendered(rendered: str) -> list[str | int]:
    """A prompt rendered with placeholders: the template's text, and where each message's
    content goes (its index)."""
    parts: list[str | int] = []
    for number, piece in enumerate(_PLACEHOLDER.split(rendered)):
        if number % 2:
            parts.append(int(piece))
        elif piece:
            parts.append(piece)
    return parts


class ChatText:
    """A model's chat template and tokenizer: renders messages and counts tokens.

    Rendering and tokenizing only read the vocabulary: safe from any thread."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._llm = llm
        meta = llm.metadata
        template = meta.get("tokenizer.chat_template") or CHATML
        vocab_bos, vocab_eos = llm.token_bos(), llm.token_eos()
        self.bos_text = self._piece(vocab_bos) if vocab_bos >= 0 else ""
        eos_text = self._piece(vocab_eos) if vocab_eos >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos_text, bos_token=self.bos_text)
        self.quantization = quantization_name(meta.get("general.file_type"))
        self._eog: tuple[int, ...] | None = None
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab))
        # The template's text between contents repeats ("<|im_end|>\n<|im_start|>user\n").
        self._markers = functools.lru_cache(maxsize=256)(self._split_markers)
        self._trims = self._template_trims()
        # Keyed by a digest, not the text; the tokens spell it, so forget() drops them all,
        # and a run tokenized while a forget happened is not kept (`_forgets` counts them).
        self._run_tokens: SizedCache[bytes, array[int]] = SizedCache(
            RUN_TOKENS_BYTES, lambda key, tokens: len(key) + tokens.itemsize * len(tokens)
        )
        self._forgets, self._forgetting = 0, threading.Lock()

    def _piece(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._formatter.add_generation_prompt = add_generation_prompt
        return self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        add_bos = not (self.bos_text and text.startswith(self.bos_text))
        return self._llm.tokenize(text.encode("utf-8", errors="replace"), add_bos, special)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain message text (special-token syntax in user text stays text)."""
        return len(self._llm.tokenize(text.encode("utf-8", errors="replace"), False, False))

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's tokens: the template's markers as control tokens, the messages'
        contents as plain text. Text between two markers is tokenized in one piece, as
        llama.cpp does, so a prompt without marker syntax in its messages gets exactly the
        tokens of its rendered text."""
        return [t for t in self.prompt_parts(messages, {}) if isinstance(t, int)]

    def prompt_parts(
        self,
        messages: Sequence[dict[str, str]],
        images: Mapping[int, Sequence[DecodedImage]],
    ) -> list[int | DecodedImage]:
        """prompt_tokens with pictures: `images` maps a message's index to the pictures shown
        at the start of its content, before its text. A picture ends the text run before it,
        so the text around it is tokenized in two pieces; no media marker is involved."""
        runs, bos = self._runs(messages, images, len(messages))
        parts: list[int | DecodedImage] = [self._llm.token_bos()] if bos else []
        for run in runs:
            parts += self._run(run) if isinstance(run, str) else [run]
        return parts

    def forget(self) -> None:
        """Drop the tokens kept of prompts' texts (a channel forgotten, a message deleted)."""
        with self._forgetting:
            self._forgets += 1
            self._run_tokens.clear()

    def _run(self, text: str) -> list[int]:
        """`_plain(text)`, kept: a run is tokenized alone, so its tokens are the same in any
        prompt it appears in."""
        key = text_key(text)
        kept = self._run_tokens.get(key)
        if kept is not None:
            return kept.tolist()
        forgets = self._forgets
        tokens = self._plain(text)
        with self._forgetting:
            if forgets == self._forgets:  # no forget meanwhile
                self._run_tokens.put(key, array("i", tokens))
        return tokens

    def opening_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """How the prompt of a conversation going on from `messages` with a user's turn starts,
        whatever that turn says: its tokens before the turn's content, but for the last few
        that the content could tokenize differently (text glued to it, as "user\n" in ChatML).
        """
        runs, bos = self._runs([*messages, {"role": "user", "content": ""}], {}, len(messages))
        last = runs[-1] if runs else None
        tail = last if isinstance(last, str) else ""
        if tail:
            runs.pop()
        tokens = [self._llm.token_bos()] if bos else []
        for run in runs:
            tokens += self._run(run) if isinstance(run, str) else [run]  # type: ignore[list-item]
        return tokens + self._steady(tail)

    def _steady(self, tail: str) -> list[int]:
        """The tokens of `tail` that stay as they are whatever text follows it. Not cached: with
        a template that has no marker between turns, `tail` is the whole conversation."""
        steady = self._plain(tail)
        for follow in _FOLLOWERS:
            after = self._plain(tail + follow)
            same = 0
            while same < min(len(steady), len(after)) and steady[same] == after[same]:
                same += 1
            del steady[same:]
        return steady

    def _plain(self, text: str) -> list[int]:
        if not text:
            return []
        return self._llm.tokenize(text.encode("utf-8", errors="replace"), False, False)

    def _runs(
        self,
        messages: Sequence[dict[str, str]],
        images: Mapping[int, Sequence[DecodedImage]],
        until: int,
    ) -> tuple[list[str | int | DecodedImage], bool]:
        """The prompt up to message `until`'s content, as plain text to tokenize in one piece,
        control tokens and pictures; and whether a BOS token opens it."""
        contents = [m.get("content", "") for m in messages]
        if self._trims:  # the template would have trimmed them (Llama 3's, Gemma's)
            contents = [c.strip() for c in contents]
        held = [{**m, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]
        rendered = self.render(held)
        runs: list[str | int | DecodedImage] = []
        for part in split_rendered(rendered):
            if part == until:
                break
            if isinstance(part, int):
                runs.extend(images.get(part, ()))
            for piece in [contents[part]] if isinstance(part, int) else self._markers(part):
                self._add(runs, piece)
        bos = self._add_bos and not (self.bos_text and rendered.startswith(self.bos_text))
        return runs, bos

    def _add(self, runs: list[str | int | DecodedImage], piece: str | int) -> None:
        """Append a piece of the prompt: plain text joins the text before it; a marker may
        strip the whitespace beside it (its LSTRIP/RSTRIP attributes, as llama.cpp does)."""
        last = runs[-1] if runs else None
        if isinstance(piece, int):
            if isinstance(last, str) and self._attr(piece) & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP:
                runs[-1] = last.rstrip(_C_SPACE)
            runs.append(piece)
        elif isinstance(last, str):
            runs[-1] = last + piece
        else:
            if isinstance(last, int) and self._attr(last) & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP:
                piece = piece.lstrip(_C_SPACE)
            if piece:
                runs.append(piece)

    def _attr(self, token: int) -> int:
        return int(llama_cpp.llama_vocab_get_attr(self._llm._model.vocab, token))

    def _split_markers(self, text: str) -> tuple[str | int, ...]:
        """The template's own text as plain pieces and the control tokens in it."""
        found: list[str | int] = []
        at = 0
        for token in self._llm.tokenize(text.encode("utf-8", errors="replace"), False, True):
            if not self._attr(token) & _SPECIAL:
                continue
            piece = self._piece(token)
            start = text.find(piece, at)
            if start < 0:  # e.g. <unk> for a character the vocabulary lacks: plain text
                continue
            found += [text[at:start], token]
            at = start + len(piece)
        found.append(text[at:])
        return tuple(p for p in found if p != "")

    def _template_trims(self) -> bool:
        """Whether the template strips the whitespace around a message's text."""
        try:
            rendered = self.render([{"role": "user", "content": f" {_OPEN} "}])
        except Exception:  # a template that wants more than one message: leave texts as is
            return False
        return _OPEN in rendered and f" {_OPEN} " not in rendered

    def eog_tokens(self) -> tuple[int, ...]:
        """Every end-of-generation token (a scan of the vocabulary, so done once)."""
        if self._eog is None:
            vocab = self._llm._model.vocab
            self._eog = tuple(
                t for t in range(self._llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)
            )
        return self._eog


class UsesChatText:
    """What a backend offers the core for prompts: rendering and counting with the model's own
    template and vocabulary. Mixed into both backends, which set `_text` when they load."""

    _text: ChatText

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self._text.render(messages, add_generation_prompt)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self._text.tokenize(text, special)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain message text (special-token syntax in user text stays text)."""
        return self._text.count_tokens(text)

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self._text.prompt_tokens(messages)

    def forget_text(self) -> None:
        """Drop the tokens kept of prompts' texts (bot.model.template.ChatText.forget)."""
        self._text.forget()

    def request_tokens(self, request: GenerationRequest) -> list[int]:
        """A request's prompt: as the caller measured it, or rendered and tokenized now."""
        if request.prompt is not None:
            return list(request.prompt)
        return self.prompt_tokens(request.messages)


def quantization_name(file_type: object) -> str:
    """GGUF's `general.file_type` as llama.cpp names it, e.g. 15 → "Q4_K_M"."""
    try:
        wanted = int(str(file_type))
    except ValueError:
        return "unknown"
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_") and getattr(llama_cpp, name) == wanted:
            short = name.removeprefix("LLAMA_FTYPE_")
            if short != "GUESSED":
                return short.removeprefix("MOSTLY_").removeprefix("ALL_")
    return "unknown"


@llama_cpp.llama_log_callback
def _quiet(_level: int, _text: bytes, _data: ctypes.c_void_p) -> None:
    pass


def open_vocab(path: Path) -> llama_cpp.Llama:
    """A vocabulary-only Llama: enough to render and count, no weights in memory. It has no
    training context, so llama.cpp would warn about a "possible training context overflow"
    on every start; its log is muted meanwhile."""
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
    try:
        return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    finally:
        llama_cpp.llama_log_set(llama_log_callback, ctypes.c_void_p(0))
