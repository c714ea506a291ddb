"""A model's chat template and tokenizer, from its GGUF.

Both backends render and count through this one class: the in-process backend with its loaded
model, the OpenAI-compatible backend with the same GGUF opened `vocab_only`. The prompt a
server evaluates is then the text we rendered and counted, token for token, when it serves
the same GGUF.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
from llama_cpp._logger import llama_log_callback
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bot.model.types import GenerationRequest

# Used when a GGUF has no chat template; ChatML is what most small instruct models speak.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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
        return self.tokenize(self.render(messages))

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
